"""The ``moleseg`` command line: ``train``, ``evaluate``, ``predict``, ``score``, ``prepare``, ``info``.

Only argument parsing and messages live here; every computation is a call into the package.
TensorFlow is imported only by the commands that run a network. Errors print one line and exit 2;
in ``predict``, ``evaluate`` and ``score`` a bad file is reported and skipped, and the exit status
is 2 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_ERROR = 0, 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------------
# progress

class ProgressBar:
    """A tqdm bar with ETA on a terminal, silent with ``--quiet`` or when stderr is not a terminal."""

    def __init__(self, total: int, description: str, quiet: bool, unit: str = "image") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit=unit, disable=quiet or not sys.stderr.isatty(),
                        dynamic_ncols=True, leave=True)

    def update_to(self, done: int, postfix: str | None = None) -> None:
        self.bar.update(max(0, done - self.bar.n))
        if postfix:
            self.bar.set_postfix_str(postfix, refresh=False)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------
# shared helpers

def _pairs(images: str | Path, masks: str | Path, args: argparse.Namespace):
    from moleseg.core.pairing import pair_folders

    report = pair_folders(images, masks)
    _say(args, report.summary())
    return report.pairs


def _load_segmenter(spec: str, tta: bool | None = None):
    from moleseg.network.loading import load_segmenter

    return load_segmenter(spec, test_time_augmentation=tta)


def _default_model() -> str:
    from moleseg.core.config import MODELS_DIR

    shipped = MODELS_DIR / "dermoscopy.keras"
    return str(shipped) if shipped.is_file() else "classical"


def _write_table(path: Path, rows: Sequence[dict]) -> None:
    from moleseg.core.atomic import atomic_write
    from moleseg.core.report import measurements_csv

    atomic_write(path, measurements_csv(list(rows)))


def _print_summary(summary: dict, baseline: dict | None = None) -> None:
    keys = [k for k in ("fm", "cm", "cr", "jaccard", "hd95", "border_fm") if k in summary]
    print(f"{'':10s} {'mean':>8s} {'std':>8s} {'min':>8s} {'max':>8s}   (n = {summary['n']})")
    for key in keys:
        values = summary[key]
        print(f"{key:10s} " + " ".join(f"{values[s]:8.4f}" for s in ("mean", "std", "min", "max")))
    if baseline and baseline.get("n"):
        fm = baseline["fm"]
        print(f"classical baseline FM: mean {fm['mean']:.4f}, min {fm['min']:.4f}, max {fm['max']:.4f}")


def _failures_exit(failures: list[tuple[str, str]]) -> int:
    for name, reason in failures:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} file(s) could not be processed", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------
# commands

def cmd_train(args: argparse.Namespace) -> int:
    from moleseg.network.data import AugmentConfig

    augment = [a for a in (args.augment or "").split(",") if a.strip() and a.strip() != "none"]
    AugmentConfig.from_names(augment)
    from moleseg.network.model.build import ModelConfig
    from moleseg.network.train import TrainConfig, TrainingCancelled, train

    chief = _join_cluster(args)
    run_dir = Path(args.out)
    if args.resume and chief:
        if not (run_dir / "config.json").is_file():
            raise CommandError(f"{run_dir}: nothing to resume (no config.json in it)")
        config = TrainConfig.from_dict({**json.loads((run_dir / "config.json").read_text()),
                                        **({"epochs": args.epochs} if args.epochs else {})})
    else:
        if (run_dir / "config.json").is_file() and not args.resume:
            raise CommandError(f"{run_dir} already holds a run: use --resume to continue it or choose another --out")
        for folder in (args.images or []) + (args.masks or []):
            if not Path(folder).is_dir():
                raise CommandError(f"folder not found: {folder}")
        model = ModelConfig(architecture=args.architecture, backbone=args.backbone, input_size=args.image_size,
                            n_classes=args.classes, separable=not args.dense_head, decoder_width=args.decoder_width)
        config = TrainConfig(
            images=list(args.images or []), masks=list(args.masks or []), model=model, weights=args.weights,
            border_width_px=args.border_width_px, shape=args.shape, solver=args.solver, epochs=args.epochs or 30,
            batch_size=args.batch_size, learning_rate=args.learning_rate, schedule=args.schedule, loss=args.loss,
            class_weighting=not args.no_class_weights, augment=augment, translation_px=args.translation_px,
            rotation_deg=args.rotation_deg, validation_split=args.validation_split, test_split=args.test_split,
            seed=args.seed, early_stopping_patience=args.early_stopping, strategy=args.strategy,
            mixed_precision=args.mixed_precision, name=args.name or run_dir.name,
            inference=args.inference, crops_per_image=args.crops_per_image, crops_by_area=args.crops_by_area,
            calibrate=not args.no_calibrate,
        )
    bar = ProgressBar(config.epochs, "training", args.quiet, unit="step")

    def progress(event) -> bool:
        if event.phase == "train":
            bar.set_total(event.steps * event.epochs)
            loss = f"epoch {event.epoch}/{event.epochs} loss {event.loss:.4f}"
            bar.update_to((event.epoch - 1) * event.steps + event.step, loss)
        return False

    echo = None if args.quiet else (lambda line: bar.bar.write(line, file=sys.stderr))
    try:
        evaluation = train(config, run_dir, resume=args.resume, progress=progress, echo=echo)
    except TrainingCancelled as error:
        raise CommandError(str(error)) from error
    finally:
        bar.close()
    if not chief:
        print(f"worker {evaluation['worker']} done: the chief wrote the run folder")
        return EXIT_OK
    print(f"best model: {run_dir / 'model.keras'} (validation FM {evaluation['best_val_fm']:.4f} "
          f"at epoch {evaluation['best_epoch']})")
    if evaluation.get("n"):
        _print_summary(evaluation, evaluation.get("baseline"))
    return EXIT_OK


# -- multi-worker training: --workers / --worker-index ----------------------------------------------

def _join_cluster(args: argparse.Namespace) -> bool:
    """Set ``TF_CONFIG`` from ``--workers``/``--worker-index`` (a ``TF_CONFIG`` already set wins) and
    say whether this process is the chief (it alone writes the run folder)."""
    from moleseg.network.cluster import current_role, tf_config_for

    if args.workers and not os.environ.get("TF_CONFIG"):
        os.environ["TF_CONFIG"] = tf_config_for(args.workers.split(","), args.worker_index)
    return current_role().chief


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers HOST:PORT,HOST:PORT`` and ``--worker-index I`` of ``moleseg train``."""
    parser.add_argument("--workers", metavar="HOST:PORT,...",
                        help="train on several machines: every worker's address, the same list on each (index 0 "
                             "is the chief, which writes the run folder); a TF_CONFIG already set wins")
    parser.add_argument("--worker-index", type=int, default=0, metavar="I",
                        help="this machine's place in --workers (0 is the chief)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from moleseg.engine.evaluate import evaluate_pairs, results_table

    pairs = _pairs(args.images, args.masks, args)
    segmenter = _load_segmenter(args.model, args.tta)
    bar = ProgressBar(len(pairs), f"evaluating {segmenter.name}", args.quiet)
    try:
        summary, results, failures = evaluate_pairs(segmenter, pairs, batch_size=args.batch_size,
                                                    progress=lambda done, total, name: bar.update_to(done))
    finally:
        bar.close()
    baseline = None
    if not args.no_baseline and not segmenter.name.startswith("classical"):
        baseline, _, _ = evaluate_pairs(_load_segmenter(f"classical{segmenter.n_classes}"), pairs)
        summary["baseline"] = {k: v for k, v in baseline.items() if k != "per_image"}
    summary["model"] = segmenter.name
    if args.json:
        from moleseg.engine.runs import write_json

        write_json(args.json, summary)
    if args.csv:
        _write_table(Path(args.csv), results_table(results))
    _print_summary(summary, baseline)
    return _failures_exit(failures.items)


def cmd_score(args: argparse.Namespace) -> int:
    from moleseg.engine.evaluate import results_table, score_pairs

    pairs = _pairs(args.pred, args.masks, args)
    bar = ProgressBar(len(pairs), "scoring", args.quiet)
    try:
        summary, results, failures = score_pairs(pairs, progress=lambda done, total, name: bar.update_to(done))
    finally:
        bar.close()
    if args.json:
        from moleseg.engine.runs import write_json

        write_json(args.json, summary)
    if args.csv:
        _write_table(Path(args.csv), results_table(results))
    if summary["n"]:
        _print_summary(summary)
    return _failures_exit(failures.items)


def _input_files(inputs: Sequence[str]) -> list[Path]:
    from moleseg.core.pairing import list_images

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"not found: {item}")
    if not files:
        raise CommandError("no image files to process")
    return files


def _threshold(text: str) -> float | str | None:
    """``--lesion-threshold``: a probability in 0..1, ``argmax`` (None) or ``model``."""
    if text in ("model", "argmax"):
        return None if text == "argmax" else text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability, 'argmax' or 'model'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a lesion threshold must be in 0..1, not {value}")
    return value


def cmd_predict(args: argparse.Namespace) -> int:
    from moleseg.core.imageio import ImageReadError, read_image
    from moleseg.engine.pipeline import analyse_images

    files = _input_files(args.inputs)
    segmenter = _load_segmenter(args.model or _default_model(), args.tta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    rows: list[dict] = []
    bar = ProgressBar(len(files), f"predicting with {segmenter.name}", args.quiet)
    try:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start:start + args.batch_size]
            images, names = [], []
            for path in chunk:
                try:
                    images.append(read_image(path))
                    names.append(path)
                except ImageReadError as error:
                    failures.append((path.name, str(error)))
            analyses = analyse_images(segmenter, images, pixel_size_mm=args.pixel_size_mm,
                                      lesion_threshold=args.lesion_threshold)
            for path, analysis in zip(names, analyses):
                try:
                    analysis.write_files(out, path.stem)
                    rows.append({"image": path.name, **analysis.measurement_row})
                except ValueError as error:
                    failures.append((path.name, str(error)))
            bar.update_to(start + len(chunk))
    finally:
        bar.close()
    if rows:
        _write_table(out / "measurements.csv", rows)
    print(f"{len(rows)} image(s) written to {out}")
    return _failures_exit(failures)


def cmd_prepare(args: argparse.Namespace) -> int:
    from moleseg.core.imageio import ImageReadError, read_mask, write_png
    from moleseg.core.pairing import list_images
    from moleseg.core.targets import class_frequencies, make_targets

    masks = list_images(args.masks) if Path(args.masks).is_dir() else []
    if not Path(args.masks).is_dir():
        raise CommandError(f"folder not found: {args.masks}")
    if not masks:
        raise CommandError(f"no mask images in {args.masks}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, str]] = []
    totals = None
    bar = ProgressBar(len(masks), "preparing targets", args.quiet)
    try:
        for index, path in enumerate(masks, start=1):
            try:
                mask = read_mask(path, allow_empty=True)
            except ImageReadError as error:
                failures.append((path.name, str(error)))
                continue
            labels = make_targets(mask, classes=args.classes, border_width_px=args.border_width_px,
                                  shape=args.shape, border_at_image_edge=args.border_at_image_edge)
            write_png(out / f"{path.stem}.png", labels.astype("uint8"))
            frequencies = class_frequencies(labels, args.classes) * labels.size
            totals = frequencies if totals is None else totals + frequencies
            bar.update_to(index)
    finally:
        bar.close()
    if totals is not None:
        share = totals / totals.sum()
        print(f"{len(masks) - len(failures)} label image(s) written to {out}; class frequencies "
              + ", ".join(f"{name} {value:.4f}" for name, value in
                          zip(("back", "border", "inside") if args.classes == 3 else ("background", "foreground"),
                              share)))
    return _failures_exit(failures)


def cmd_info(args: argparse.Namespace) -> int:
    from moleseg.core.modelinfo import read_model_info

    print(json.dumps(read_model_info(args.model), indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------
# parser

def build_parser() -> argparse.ArgumentParser:
    from moleseg import __version__

    parser = argparse.ArgumentParser(prog="moleseg", description="Dermoscopy border analysis and cell segmentation.")
    parser.add_argument("--version", action="version", version=f"moleseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--quiet", action="store_true", help="no progress bar or messages")
        return sub

    train = add("train", "train a network on image/mask folders into a run folder", cmd_train)
    train.add_argument("--images", action="append", metavar="DIR", help="image folder (repeat to combine datasets)")
    train.add_argument("--masks", action="append", metavar="DIR", help="mask folder, one per --images")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to create (or resume)")
    train.add_argument("--classes", type=int, choices=(3, 2), default=3, help="3: back/border/inside; 2: cells")
    train.add_argument("--backbone", default="mobilenetv2",
                       choices=("mobilenetv2", "resnet18", "resnet50", "xception", "inceptionresnetv2"))
    train.add_argument("--architecture", default="deeplabv3plus", choices=("deeplabv3plus", "unet", "fpn", "linknet"))
    train.add_argument("--weights", default="imagenet", help="none, imagenet or a .keras file to start from")
    train.add_argument("--solver", default="adam", choices=("sgdm", "rmsprop", "adam"))
    train.add_argument("--epochs", type=int, help="number of epochs (default 30)")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--schedule", default="cosine", choices=("constant", "cosine", "piecewise"))
    train.add_argument("--loss", default="weighted_ce", choices=("weighted_ce", "ce", "dice", "focal", "dice_ce"))
    train.add_argument("--no-class-weights", action="store_true", help="no inverse-frequency class weights")
    train.add_argument("--image-size", type=int, default=256, help="network input side in px, a multiple of 16")
    train.add_argument("--border-width-px", type=int, default=4, help="BORDER band width (px of the input)")
    train.add_argument("--shape", default="diamond", choices=("diamond", "disk", "square"))
    train.add_argument("--augment", default="rotation,reflection,translation",
                       help="comma list of rotation,reflection,translation,scale,colour (or none)")
    train.add_argument("--translation-px", type=float, default=10.0, help="translation range, +- px")
    train.add_argument("--rotation-deg", type=float, default=180.0, help="rotation range, +- degrees")
    train.add_argument("--validation-split", type=float, default=0.15)
    train.add_argument("--test-split", type=float, default=0.0)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--early-stopping", type=int, default=0, metavar="EPOCHS",
                       help="stop after this many epochs without a better validation FM (0: off)")
    train.add_argument("--dense-head", action="store_true", help="plain 3x3 convolutions instead of separable")
    train.add_argument("--decoder-width", type=int, default=128)
    train.add_argument("--strategy", default="auto", choices=("auto", "default", "mirrored"))
    train.add_argument("--mixed-precision", default="auto", choices=("auto", "on", "off"))
    train.add_argument("--inference", default="resize", choices=("resize", "tiles"),
                       help="resize whole images to the input (moles) or crop/tile at the image's own scale (cells)")
    train.add_argument("--crops-per-image", type=int, default=1, help="random crops per image and epoch (tiles)")
    train.add_argument("--crops-by-area", action="store_true",
                       help="tiles: crops per input-sized area of each image (up to 16), not per image")
    train.add_argument("--no-calibrate", action="store_true",
                       help="keep arg-max without flips instead of choosing them by validation FM after training")
    train.add_argument("--name", help="model name stored in the file (default: the run folder's name)")
    train.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    add_worker_arguments(train)

    evaluate = add("evaluate", "score a model against true masks", cmd_evaluate)
    evaluate.add_argument("--model", required=True, help="a .keras file or 'classical'")
    evaluate.add_argument("--images", required=True, metavar="DIR")
    evaluate.add_argument("--masks", required=True, metavar="DIR")
    evaluate.add_argument("--json", metavar="FILE")
    evaluate.add_argument("--csv", metavar="FILE")
    evaluate.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                          help="flip test-time augmentation (default: the model's own setting)")
    evaluate.add_argument("--batch-size", type=int, default=4)
    evaluate.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")

    predict = add("predict", "segment images and write overlays, masks and measurements", cmd_predict)
    predict.add_argument("--model", help="a .keras file or 'classical' (default: the shipped dermoscopy model)")
    predict.add_argument("--out", required=True, metavar="DIR")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    predict.add_argument("--pixel-size-mm", type=float, help="mm per pixel, for physical units")
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    predict.add_argument("--lesion-threshold", type=_threshold, default="model", metavar="P|argmax|model",
                         help="lesion where its probability >= P (0..1); 'argmax': the most likely class; "
                              "default 'model': the model's calibrated choice")
    predict.add_argument("--batch-size", type=int, default=4)

    score = add("score", "score predicted masks from any tool against true masks", cmd_score)
    score.add_argument("--pred", required=True, metavar="DIR")
    score.add_argument("--masks", required=True, metavar="DIR")
    score.add_argument("--json", metavar="FILE")
    score.add_argument("--csv", metavar="FILE")

    prepare = add("prepare", "write BACK/BORDER/INSIDE label images from masks", cmd_prepare)
    prepare.add_argument("--masks", required=True, metavar="DIR")
    prepare.add_argument("--out", required=True, metavar="DIR")
    prepare.add_argument("--border-width-px", type=int, required=True)
    prepare.add_argument("--shape", default="diamond", choices=("diamond", "disk", "square"))
    prepare.add_argument("--classes", type=int, choices=(3, 2), default=3)
    prepare.add_argument("--border-at-image-edge", action="store_true",
                         help="draw BORDER along the image frame too (Matlab's imerode does not)")

    info = add("info", "print a model file's metadata", cmd_info)
    info.add_argument("model")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moleseg`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
