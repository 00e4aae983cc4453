"""The ``moleseg`` command line: ``train``, ``evaluate``, ``predict``, ``score``, ``prepare``, ``info``, ``serve``.

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
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from moleseg.core.options import Option

EXIT_OK, EXIT_ERROR = 0, 2
#: Exit status when the reader of standard output went away (``moleseg info m.keras | head``): 128 + SIGPIPE,
#: as a Unix tool killed by it.
EXIT_BROKEN_PIPE = 141


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
    from moleseg.core.config import models_dir

    shipped = models_dir() / "dermoscopy.keras"
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


def printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped (``\\n``, ``\\x1b``, ...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _checked_output(option: str, value: str) -> Path:
    """The file of ``--json``/``--csv``, checked before any work: not a folder, in a writable folder."""
    path = Path(value)
    if path.is_dir():
        raise CommandError(f"{option} {printable(value)} is a folder: give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"{option} {printable(value)}: the folder {printable(str(folder))} does not exist")
    _check_writable(folder, f"{option} {printable(value)}")
    return path


def _check_writable(folder: Path, what: str) -> None:
    """Refuse ``folder`` when no file can be created in it (probed with a temporary file, removed).

    Raises
    ------
    CommandError
        ``"<what>: cannot write into <folder> (<reason>)"``.
    """
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".moleseg-write-check-"):
            pass
    except OSError as error:
        raise CommandError(f"{what}: cannot write into {printable(str(folder))} "
                           f"({error.strerror or error})") from error


def _checked_outputs(args: argparse.Namespace) -> dict[str, Path]:
    """``{"json": path, "csv": path}`` of the given ``--json``/``--csv`` options, checked (see above)."""
    return {key: _checked_output(f"--{key}", getattr(args, key)) for key in ("json", "csv") if getattr(args, key)}


def _write_outputs(outputs: dict[str, Path], summary: dict, table: list[dict]) -> int:
    """Write the checked ``--json``/``--csv`` files after the summary was printed; EXIT_ERROR if one fails."""
    from moleseg.engine.runs import write_json

    status = EXIT_OK
    for key, path in outputs.items():
        try:
            if key == "json":
                write_json(path, summary)
            else:
                _write_table(path, table)
        except OSError as error:
            print(f"error: --{key} {printable(str(path))} could not be written ({error.strerror or error}); "
                  "the summary above is complete", file=sys.stderr)
            status = EXIT_ERROR
    return status


def _print_mask_warnings(failures) -> None:
    """One line per empty or full true mask, and how many there were."""
    for name, text in failures.warnings:
        print(f"warning: {printable(text)} (scored anyway: {printable(name)})", file=sys.stderr)
    if failures.warnings:
        print(f"warning: {failures.empty_masks} empty and {failures.full_masks} full true mask(s) were scored; "
              "they pull the mean down", file=sys.stderr)


def _skipped_line(name: str, reason: str) -> str:
    """``skipped <name>: <reason>``, the name written once when the reason already starts with it."""
    text = reason if reason.startswith(f"{name}:") else f"{name}: {reason}"
    return f"skipped {printable(text)}"


def _failures_exit(failures: list[tuple[str, str]]) -> int:
    for name, reason in failures:
        print(_skipped_line(name, reason), file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} file(s) could not be processed", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------
# commands

#: Prefix of the argparse destinations of the training options (``opt:model.input_size``).
OPTION_DEST = "opt:"


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settable option of :mod:`moleseg.core.options` (and its older aliases), none with a
    default: only the flags given land in the namespace (see :func:`given_options`)."""
    from moleseg.core import options

    groups = {name: parser.add_argument_group(f"{name} options") for name in options.GROUPS}
    for item in options.OPTIONS:
        if not item.settable:
            continue
        group = groups[item.group]
        dest = OPTION_DEST + item.name
        if item.kind == "bool":
            group.add_argument(item.cli_flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=item.describe().replace("%", "%%"))
            for alias in item.aliases:
                group.add_argument(alias, dest=dest, action="store_false", default=argparse.SUPPRESS,
                                   help=f"same as --no-{item.cli_flag[2:]}")
        elif item.kind == "folders":
            group.add_argument(item.cli_flag, *item.aliases, dest=dest, action="append", metavar="DIR",
                               default=argparse.SUPPRESS, help=item.describe().replace("%", "%%") + "; repeat for several")
        else:
            group.add_argument(item.cli_flag, *item.aliases, dest=dest, type=_option_parser(item),
                               choices=item.choices if item.kind == "choice" else None,
                               metavar=None if item.kind == "choice" else item.kind.upper(),
                               default=argparse.SUPPRESS, help=item.describe().replace("%", "%%"))


def _option_parser(item: Option) -> Callable[[str], object]:
    """``item.parse`` with its errors as argparse's (one usage line naming the option)."""

    def parse(text: str) -> object:
        try:
            return item.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def given_options(args: argparse.Namespace) -> dict:
    """The training options given as flags, as a configuration dictionary (``model`` options nested)."""
    from moleseg.core import options

    values: dict = {}
    for dest, value in vars(args).items():
        if dest.startswith(OPTION_DEST):
            options.set_value(values, dest[len(OPTION_DEST):], value)
    return values


def train_config_of(args: argparse.Namespace) -> dict:
    """The configuration dictionary of a new training: the defaults, overridden by ``--config FILE``
    (its relative folders under ``--data-root``, by default the file's folder), overridden by the flags
    given; ``name`` defaults to the run folder's name. Checked by ``TrainConfig``, not here."""
    from moleseg.core import options

    from_file = options.read_config_file(args.config, args.data_root) if args.config else {}
    values = options.merged(from_file, given_options(args))
    if values.get("name") is None:
        values["name"] = Path(args.out).name
    return values


def cmd_train(args: argparse.Namespace) -> int:
    from moleseg.engine.launch import start_training
    from moleseg.engine.trainlock import TrainingBusy

    chief = _join_cluster(args)
    resume = args.resume and chief  # other workers of a cluster take the chief's state when they start
    run_dir = Path(args.out)
    if resume:
        config = {"epochs": given_options(args).get("epochs")}
    else:
        if run_dir.exists() and not run_dir.is_dir():
            raise CommandError(f"--out {printable(str(run_dir))} is a file, not a folder: choose a folder name for the run")
        config = train_config_of(args)
    bar = ProgressBar(0, "training", args.quiet, unit="step")

    def progress(status) -> None:
        if status.phase == "train" and status.steps and status.epochs:
            bar.set_total(status.steps * status.epochs)
            loss = f"epoch {status.epoch}/{status.epochs} loss {status.loss:.4f}" if status.loss is not None else None
            bar.update_to((status.epoch - 1) * status.steps + status.step, loss)

    echo = None if args.quiet else (lambda line: bar.bar.write(line, file=sys.stderr))
    try:
        status = start_training(config, run_dir, resume=resume, wait=True, origin="terminal",
                                wait_for_lock=args.wait, cluster_worker=not chief, on_progress=progress, echo=echo)
    except TrainingBusy as error:
        raise CommandError(f"{error} (or give --wait to start when it ends)") from None
    finally:
        bar.close()
    if status.status != "done":
        raise CommandError(f"the training {status.status}: {status.error or status.message} (see {run_dir / 'job.log'})")
    if status.result.worker is not None:
        print(f"worker {status.result.worker} done: the chief wrote the run folder")
        return EXIT_OK
    print(f"best model: {run_dir / 'model.keras'} (validation FM {status.result.best_val_fm:.4f} "
          f"at epoch {status.result.best_epoch})")
    _print_test_summary(run_dir)
    return EXIT_OK


def _print_test_summary(run_dir: Path) -> None:
    """The test split's scores of a finished run and the classical baseline's FM, when it has a test split."""
    from moleseg.engine.runs import read_evaluation

    evaluation = read_evaluation(run_dir)
    if evaluation is None or not evaluation.n:
        return
    print(f"{'':10s} {'mean':>8s} {'std':>8s} {'min':>8s} {'max':>8s}   (n = {evaluation.n})")
    for key, values in evaluation.metrics.items():
        print(f"{key:10s} " + " ".join(f"{getattr(values, s):8.4f}" for s in ("mean", "std", "min", "max")))
    if evaluation.baseline_fm is not None:
        fm = evaluation.baseline_fm
        print(f"classical baseline FM: mean {fm.mean:.4f}, min {fm.min:.4f}, max {fm.max:.4f}")


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
    from moleseg.engine.overlap import training_overlap

    outputs = _checked_outputs(args)
    pairs = _pairs(args.images, args.masks, args)
    segmenter = _load_segmenter(args.model, args.tta)
    overlap = training_overlap(segmenter.info, [pair.image for pair in pairs])
    if overlap.warning():
        print(f"warning: {overlap.warning()}", file=sys.stderr)
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
    summary["training_overlap"] = overlap.to_json()
    _print_summary(summary, baseline)
    _print_mask_warnings(failures)
    if overlap.known:
        print(f"evaluated images the model was trained on: {overlap.count} of {overlap.total}")
    if overlap.warning():
        print(f"warning: {overlap.warning()}", file=sys.stderr)
    written = _write_outputs(outputs, summary, results_table(results))
    return max(written, _failures_exit(failures.items))


def cmd_score(args: argparse.Namespace) -> int:
    from moleseg.engine.evaluate import results_table, score_pairs

    outputs = _checked_outputs(args)
    pairs = _pairs(args.pred, args.masks, args)
    bar = ProgressBar(len(pairs), "scoring", args.quiet)
    try:
        summary, results, failures = score_pairs(pairs, progress=lambda done, total, name: bar.update_to(done))
    finally:
        bar.close()
    if summary["n"]:
        _print_summary(summary)
    _print_mask_warnings(failures)
    written = _write_outputs(outputs, summary, results_table(results))
    return max(written, _failures_exit(failures.items))


def _input_files(inputs: Sequence[str], failures: list[tuple[str, str]]) -> list[Path]:
    """The image files of ``inputs`` (files and folders), each file once (a file given again, or also through
    its folder, is not segmented twice); a missing input is added to ``failures``."""
    from moleseg.core.pairing import list_images

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file():
            files.append(path)
        else:
            failures.append((item, f"{item}: not found"))
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    files = list(unique.values())
    if not files:
        for name, reason in failures:
            print(_skipped_line(name, reason), file=sys.stderr)
        raise CommandError("no image files to process" + (" (not found: " + ", ".join(
            printable(name) for name, _ in failures) + ")" if failures else ""))
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


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number ``>= low`` (``--batch-size``, ``--border-width-px``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


def _pixel_size(text: str) -> float:
    """``--pixel-size-mm``: a positive, finite number of millimetres per pixel."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of mm per pixel") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a pixel size must be a positive number of mm per pixel, not {text}")
    return value


def _outline_formats(text: str) -> tuple[str, ...]:
    """``--outlines``: comma-separated names of :data:`moleseg.core.outlines.OUTLINE_FORMATS`."""
    from moleseg.core.outlines import OutlineError, parse_formats

    try:
        return parse_formats(text)
    except OutlineError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _check_out_not_an_input(out: str, inputs: Sequence[str], harm: str) -> None:
    """Refuse an ``--out`` that is one of the input folders of predict/prepare; ``harm`` says what writing
    there would do."""
    target = Path(out).resolve()
    if any(Path(item).is_dir() and Path(item).resolve() == target for item in inputs):
        raise CommandError(f"--out {printable(out)} is also an input folder: {harm}; choose another folder")


def _output_folder(path: str) -> Path:
    """``--out`` of predict/prepare, created; CommandError when it is a file, cannot be created or cannot be
    written into (one line before any image, not one failure per image)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {printable(path)} is a file, not a folder: choose a folder name")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(f"cannot create the output folder {printable(path)} ({error.strerror or error})") from error
    _check_writable(out, f"--out {printable(path)}")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from moleseg.core.modelinfo import ModelInfo
    from moleseg.core.report import MEASUREMENTS_CSV, settings_sidecar, sidecar_name
    from moleseg.engine.pipeline import predict_files

    failures: list[tuple[str, str]] = []
    files = _input_files(args.inputs, failures)
    _check_out_not_an_input(args.out, args.inputs, "its results would mix with the images there (a true "
                            "<name>_mask.png replaced, the results read as images by the next run)")
    segmenter = _load_segmenter(args.model or _default_model(), args.tta)  # before --out: no empty folder left
    out = _output_folder(args.out)
    bar = ProgressBar(len(files), f"predicting with {segmenter.name}", args.quiet)
    try:
        outcome = predict_files(segmenter, files, out, batch_size=args.batch_size, pixel_size_mm=args.pixel_size_mm,
                                lesion_threshold=args.lesion_threshold, outlines=args.outlines,
                                model_version=ModelInfo.from_dict(segmenter.info).version_text,
                                progress=bar.update_to,
                                note=lambda name, message: _say(args, f"{printable(name)}: {message}"))
    finally:
        bar.close()
    rows, stopped, object_rows, settings = outcome.rows, outcome.stopped, outcome.object_rows, outcome.settings
    failures.extend(outcome.failures)
    if rows:
        from moleseg.core.atomic import atomic_write

        try:
            _write_table(out / MEASUREMENTS_CSV, rows)
            atomic_write(out / sidecar_name(MEASUREMENTS_CSV), settings_sidecar(MEASUREMENTS_CSV, settings))
            if object_rows:
                _write_table(out / "objects.csv", object_rows)
        except OSError as error:
            raise CommandError(f"{len(rows)} image(s) written to {printable(str(out))}, but {MEASUREMENTS_CSV} "
                               f"could not be written ({error.strerror or error})") from error
    print(f"{len(rows)} image(s) written to {printable(str(out))}")
    if stopped:
        _failures_exit(failures)
        raise CommandError(stopped)
    return _failures_exit(failures)


def cmd_prepare(args: argparse.Namespace) -> int:
    from moleseg.core.imageio import ImageReadError, mask_problem, read_mask, write_png
    from moleseg.core.pairing import list_images
    from moleseg.core.targets import class_frequencies, make_targets
    from moleseg.engine.pipeline import output_stems

    masks = list_images(args.masks) if Path(args.masks).is_dir() else []
    if not Path(args.masks).is_dir():
        raise CommandError(f"--masks {printable(args.masks)} is a file, not a folder of masks" if Path(args.masks).exists()
                           else f"folder not found: {args.masks}")
    if not masks:
        raise CommandError(f"no mask images in {args.masks}")
    _check_out_not_an_input(args.out, [args.masks], "the label images would replace the masks of the same name")
    out = _output_folder(args.out)
    stems = dict(zip(masks, output_stems(masks)))  # m.png and m.tif: m_png.png and m_tif.png
    failures: list[tuple[str, str]] = []
    degenerate = {"empty": 0, "full": 0}
    totals = None
    bar = ProgressBar(len(masks), "preparing targets", args.quiet)
    try:
        for index, path in enumerate(masks, start=1):
            try:
                mask = read_mask(path, allow_empty=True)
            except ImageReadError as error:
                failures.append((path.name, str(error)))
                continue
            problem = mask_problem(mask)
            if problem is not None:
                degenerate["full" if mask.any() else "empty"] += 1
                print(f"warning: {printable(path.name)}: {problem}", file=sys.stderr)
            labels = make_targets(mask, classes=args.classes, border_width_px=args.border_width_px,
                                  shape=args.shape, border_at_image_edge=args.border_at_image_edge)
            write_png(out / f"{stems[path]}.png", labels.astype("uint8"))
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
    if degenerate["empty"] or degenerate["full"]:
        print(f"warning: {degenerate['empty']} empty and {degenerate['full']} full mask(s) among them",
              file=sys.stderr)
    return _failures_exit(failures)


def cmd_compare(args: argparse.Namespace) -> int:
    from moleseg.core.atomic import atomic_write
    from moleseg.core.imageio import ImageReadError, read_image
    from moleseg.engine.compare import compare_visits
    from moleseg.engine.runs import write_json

    json_path = _checked_output("--json", args.json)
    pdf_path = _checked_output("--pdf", args.pdf) if args.pdf else None
    try:
        before, after = read_image(args.before), read_image(args.after)
    except ImageReadError as error:
        raise CommandError(str(error)) from error
    segmenter = _load_segmenter(args.model or _default_model())
    comparison = compare_visits(segmenter, before, after, pixel_size_mm=args.pixel_size_mm,
                                allow_scale=args.allow_scale)
    summary = {"before": str(args.before), "after": str(args.after), **comparison.to_json()}
    write_json(json_path, summary)
    if pdf_path is not None:
        atomic_write(pdf_path, comparison.pdf(Path(args.before).name, Path(args.after).name))
    for warning in comparison.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    registration = comparison.registration
    print(f"rotation {registration.rotation_deg:.2f} deg, translation ({registration.translation_px[0]:.1f}, "
          f"{registration.translation_px[1]:.1f}) px, registration quality {registration.quality:.2f}; "
          f"area change {comparison.area_change_percent:+.2f} %")
    return EXIT_OK


def cmd_study(args: argparse.Namespace) -> int:
    from moleseg.engine.studyplan import describe_plan
    from moleseg.engine.studyrun import checked_study, run_study
    from moleseg.studyreport import write_html

    study = checked_study(args.config, data_root=args.data_root)  # the file, every run and the data split
    if args.dry_run:
        print(describe_plan(study))
        return EXIT_OK
    rows = run_study(study, args.out, echo=lambda line: _say(args, line))
    write_html(study, args.out, rows)
    _say(args, f"{len(rows)} run(s) finished; results in {Path(args.out) / 'study.csv'}, study.html, verdicts.md")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    outputs = _checked_outputs(args)
    model = args.model or _default_model()
    if model == "classical":
        raise CommandError("moleseg bench measures a network: give --model FILE.keras (no shipped model found)")
    images = Path(args.images) if args.images else None
    if images is not None and not images.is_dir():
        raise CommandError(f"--images {printable(args.images)}: not a folder")
    from moleseg.network.bench import BenchSettings, format_report, run_bench

    settings = BenchSettings.quick_settings() if args.quick else BenchSettings()
    result = run_bench(model, images, settings, echo=lambda line: _say(args, line))
    print(format_report(result))
    return _write_outputs(outputs, result, [])


def cmd_serve(args: argparse.Namespace) -> int:
    from moleseg.core.config import APP_FILE
    from moleseg.core.settings import load_settings

    settings = load_settings()
    if not APP_FILE.is_file():
        raise CommandError(f"moleseg serve runs the app of a source checkout: {APP_FILE} not found")
    command = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), *settings.streamlit_flags()]
    if args.print_command:
        print(" ".join(command))
        return EXIT_OK
    _say(args, f"moleseg: {settings.mode} mode, listening on {settings.address} port {settings.port}; "
               f"host names {', '.join(settings.allowed_hosts)}")
    sys.stdout.flush()
    os.chdir(APP_FILE.parent)  # Streamlit reads .streamlit/config.toml from the working folder
    os.execv(sys.executable, command)


def cmd_info(args: argparse.Namespace) -> int:
    from moleseg.core.modelinfo import read_info

    print(json.dumps(read_info(args.model).to_dict(), indent=2))
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------
# parser

def build_parser() -> argparse.ArgumentParser:
    from moleseg import __version__
    from moleseg.core import options
    from moleseg.core.outlines import OUTLINE_FORMATS

    at_least_one_image = _int_at_least(int(options.option("batch_size").low))  # a batch holds an image or more
    parser = argparse.ArgumentParser(prog="moleseg", description="Dermoscopy border analysis and cell segmentation.")
    parser.add_argument("--version", action="version", version=f"moleseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--quiet", action="store_true", help="no progress bar or messages")
        return sub

    train = add("train", "train a network on image/mask folders into a run folder", cmd_train)
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to create (or resume)")
    train.add_argument("--config", metavar="FILE",
                       help="start from a configuration file (a run's config.json or a recipe in models/); "
                            "flags given as well override its values")
    train.add_argument("--data-root", metavar="DIR",
                       help="folder that relative dataset folders of --config are under (default: the folder "
                            "holding the file)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out with its own config.json (only --epochs may grow)")
    train.add_argument("--wait", action="store_true",
                       help="when another training runs (the app's, a study's, another terminal's), start once it "
                            "ends instead of refusing")
    add_option_flags(train)
    add_worker_arguments(train)

    evaluate = add("evaluate", "score a model against true masks", cmd_evaluate)
    evaluate.add_argument("--model", required=True, help="a .keras file or 'classical'")
    evaluate.add_argument("--images", required=True, metavar="DIR")
    evaluate.add_argument("--masks", required=True, metavar="DIR")
    evaluate.add_argument("--json", metavar="FILE")
    evaluate.add_argument("--csv", metavar="FILE")
    evaluate.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                          help="flip test-time augmentation (default: the model's own setting)")
    evaluate.add_argument("--batch-size", type=at_least_one_image, default=4)
    evaluate.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")

    predict = add("predict", "segment images and write overlays, masks and measurements", cmd_predict)
    predict.add_argument("--model", help="a .keras file or 'classical' (default: the shipped dermoscopy model)")
    predict.add_argument("--out", required=True, metavar="DIR")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    predict.add_argument("--pixel-size-mm", type=_pixel_size, help="mm per pixel, for physical units")
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None)
    predict.add_argument("--lesion-threshold", type=_threshold, default="model", metavar="P|argmax|model",
                         help="lesion where its probability >= P (0..1); 'argmax': the most likely class; "
                              "default 'model': the model's calibrated choice")
    predict.add_argument("--batch-size", type=at_least_one_image, default=4)
    predict.add_argument("--outlines", type=_outline_formats, default=(), metavar="FORMATS",
                         help=f"also write the outline as {', '.join(OUTLINE_FORMATS)} (comma-separated): "
                              "GeoJSON for QuPath, an ImageJ .roi for Fiji, an SVG path; x, y in px")

    score = add("score", "score predicted masks from any tool against true masks", cmd_score)
    score.add_argument("--pred", required=True, metavar="DIR")
    score.add_argument("--masks", required=True, metavar="DIR")
    score.add_argument("--json", metavar="FILE")
    score.add_argument("--csv", metavar="FILE")

    prepare = add("prepare", "write BACK/BORDER/INSIDE label images from masks", cmd_prepare)
    prepare.add_argument("--masks", required=True, metavar="DIR")
    prepare.add_argument("--out", required=True, metavar="DIR")
    prepare.add_argument("--border-width-px", type=_int_at_least(int(options.option("border_width_px").low)),
                         required=True)
    prepare.add_argument("--shape", default="diamond", choices=("diamond", "disk", "square"))
    prepare.add_argument("--classes", type=int, choices=(3, 2), default=3)
    prepare.add_argument("--border-at-image-edge", action="store_true",
                         help="draw BORDER along the image frame too (Matlab's imerode does not)")

    compare = add("compare", "align two visits of one lesion and report what changed", cmd_compare)
    compare.add_argument("before", metavar="BEFORE", help="the earlier image")
    compare.add_argument("after", metavar="AFTER", help="the later image")
    compare.add_argument("--model", help="a .keras file or 'classical' (default: the shipped dermoscopy model)")
    compare.add_argument("--pixel-size-mm", type=_pixel_size, help="mm per pixel, for physical units")
    compare.add_argument("--allow-scale", action="store_true",
                         help="fit a scale too (only when the magnification differs; a contact dermatoscope's does not)")
    compare.add_argument("--json", required=True, metavar="FILE", help="write the comparison here")
    compare.add_argument("--pdf", metavar="FILE", help="write a one-page PDF of the comparison here")

    study = add("study", "run the article's study (factors x seeds) and compare the settings' test FM", cmd_study)
    study.add_argument("--config", required=True, metavar="STUDY.yaml", help="the study file (see studies/)")
    study.add_argument("--out", required=True, metavar="DIR", help="study folder (an interrupted study continues)")
    study.add_argument("--dry-run", action="store_true", help="check the file and list every run; train nothing")
    study.add_argument("--data-root", metavar="DIR", help="folder the study's data paths are relative to")
    bench = add("bench", "measure the machine's limits and the network's, end-to-end and training speed", cmd_bench)
    bench.add_argument("--model", help="a .keras file (default: the shipped dermoscopy model)")
    bench.add_argument("--images", metavar="DIR", help="real images for end-to-end and predict (default: synthetic)")
    bench.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    bench.add_argument("--quick", action="store_true", help="tiny sizes and repeats: checks that it runs, "
                       "figures not representative")
    bench.set_defaults(csv=None)
    serve = add("serve", "start the app with the server's settings (MOLESEG_* variables, MOLESEG_CONFIG file: "
                         "mode, address, port, allowed host names)", cmd_serve)
    serve.add_argument("--print-command", action="store_true", help="print the streamlit command, start nothing")
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
    except BrokenPipeError:
        # the reader closed the pipe: stop quietly; what is left unwritten goes to os.devnull, so the flush at
        # exit raises nothing either (the Python documentation's recipe for SIGPIPE)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # no real file behind sys.stdout (io.UnsupportedOperation is both)
            pass
        return EXIT_BROKEN_PIPE
    except (CommandError, ValueError, OSError, RuntimeError) as error:
        if isinstance(error, OSError) and error.filename and error.strerror:
            message = f"{error.filename}: {error.strerror}"
        else:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {printable(message)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
