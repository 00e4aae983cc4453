"""The ``moleseg`` command line: the parser, :func:`main`, and the small commands ``bench``, ``serve`` and ``info``.

The commands that do the work live beside it: ``train`` and ``study`` in :mod:`moleseg.cli.training`,
``evaluate``, ``score`` and ``compare`` in :mod:`moleseg.cli.scoring`, ``predict``, ``merge`` and ``prepare`` in
:mod:`moleseg.cli.files`, what they share in :mod:`moleseg.cli.common`. Only argument parsing and messages
live here; every computation is a call into the package. TensorFlow is imported only by the commands that
run a network. Errors print one line and exit 2; in ``predict``, ``evaluate`` and ``score`` a bad file is
reported and skipped, and the exit status is 2 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from moleseg.cli.adopt import add_adopt_command
from moleseg.cli.common import (EXIT_BROKEN_PIPE, EXIT_DEFECT, EXIT_ERROR, EXIT_OK, CommandError, checked_outputs,
                                int_at_least, parse_pixel_size, printable, report_defect, say, show_warning_line,
                                write_outputs)
from moleseg.cli.files import cmd_merge, cmd_predict, cmd_prepare, parse_outline_formats, parse_shard, parse_threshold
from moleseg.cli.scoring import cmd_compare, cmd_evaluate, cmd_score
from moleseg.cli.training import add_option_flags, add_worker_arguments, cmd_study, cmd_train
from moleseg.core.config import BASELINE_NAME, CLASSICAL_NAMES, default_model_spec
from moleseg.core.dicomexport import NEUTRAL_ID_DIGITS, NEUTRAL_WORD
from moleseg.core.errors import first_line
from moleseg.core.terminal import terminal_streams


def _bench_images(args: argparse.Namespace) -> Path | None:
    """``--images`` of ``moleseg bench`` (None: synthetic images); CommandError when it is not a folder."""
    images = Path(args.images) if args.images else None
    if images is not None and not images.is_dir():
        raise CommandError(f"--images {printable(args.images)}: not a folder")
    return images


def cmd_bench(args: argparse.Namespace) -> int:
    outputs = checked_outputs(args)
    if args.app:
        return _bench_app(args, outputs)
    model = args.model or default_model_spec()
    if model in CLASSICAL_NAMES:
        reason = f"--model {model} is the {BASELINE_NAME}" if args.model else "no shipped model found"
        raise CommandError(f"moleseg bench measures a network: give --model FILE.keras ({reason})")
    images = _bench_images(args)
    from moleseg.tools.bench import format_report, run_bench
    from moleseg.tools.bench_machine import BenchSettings

    settings = BenchSettings.quick_settings() if args.quick else BenchSettings()
    result = run_bench(model, images, settings, echo=lambda line: say(args, line))
    print(format_report(result))
    return write_outputs(outputs, result, [])


def _bench_app(args: argparse.Namespace, outputs: dict[str, Path]) -> int:
    if args.model:
        raise CommandError("moleseg bench --app times the server's default model; --model is for the network "
                           "benchmark")
    images = _bench_images(args)
    from moleseg.tools.bench_app import AppBenchSettings, format_app_report, run_app_bench

    settings = AppBenchSettings.quick_settings() if args.quick else AppBenchSettings()
    result = run_app_bench(default_model_spec(), images, settings, echo=lambda line: say(args, line))
    print(format_app_report(result))
    return write_outputs(outputs, result, [])


def cmd_serve(args: argparse.Namespace) -> int:
    from moleseg.core.config import APP_FILE, SERVE_FILE
    from moleseg.core.settings import load_settings, masked_url

    settings = load_settings()
    for needed in (APP_FILE, SERVE_FILE):
        if not needed.is_file():
            raise CommandError(f"moleseg serve runs the app of a source checkout: {needed} not found")
    # Streamlit's own command line through the app's launcher, which loads the pages' modules once it listens;
    # it runs app.py as an ASGI app behind the media gate (serve_app.py)
    command = [sys.executable, "-m", "moleseg.app.server", "run", str(SERVE_FILE), *settings.streamlit_flags()]
    if args.print_command:
        print(" ".join(command))
        return EXIT_OK
    records = f"PostgreSQL {masked_url(settings.database_url)}" if settings.database_url else "SQLite in data_dir"
    say(args, f"moleseg: {settings.mode} mode, listening on {settings.address} port {settings.port}; "
               f"host names {', '.join(settings.allowed_hosts)}; records: {records}")
    sys.stdout.flush()
    os.chdir(APP_FILE.parent)  # Streamlit reads .streamlit/config.toml from the working folder
    os.execv(sys.executable, command)


def cmd_info(args: argparse.Namespace) -> int:
    from moleseg.core.modelinfo import read_info

    print(json.dumps(read_info(args.model).to_dict(), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from moleseg import __version__
    from moleseg.core import options
    from moleseg.core.config import (DEFAULT_CLASS_COUNT, DEFAULT_SHAPE, INFERENCE_BATCH_SIZE, MAX_NOISE_PASSES,
                                     MIN_NOISE_PASSES, STUDY_DATA_ROOT_HELP)
    from moleseg.core.outlines import OUTLINE_FORMATS
    from moleseg.core.targets import SHAPES

    batch_size = options.option("batch_size")
    at_least_one_image = int_at_least(int(batch_size.low), int(batch_size.high))  # an image or more, within the cap
    model_help = "a .keras file or 'classical' (default: the shipped dermoscopy model)"
    pixel_size_help = "mm per pixel, for physical units"
    tta_help = "flip test-time augmentation (default: the model's own setting)"
    batch_help = f"images the network predicts at once (default: {INFERENCE_BATCH_SIZE})"
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
                            "ends instead of refusing, after the trainings queued on the Train page")
    add_option_flags(train)
    add_worker_arguments(train)

    evaluate = add("evaluate", "score a model against true masks", cmd_evaluate)
    evaluate.add_argument("--model", required=True, help="a .keras file or 'classical'")
    evaluate.add_argument("--images", required=True, metavar="DIR")
    evaluate.add_argument("--masks", required=True, metavar="DIR")
    evaluate.add_argument("--json", metavar="FILE")
    evaluate.add_argument("--csv", metavar="FILE")
    evaluate.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=tta_help)
    evaluate.add_argument("--batch-size", type=at_least_one_image, default=INFERENCE_BATCH_SIZE, help=batch_help)
    evaluate.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")

    predict = add("predict", "segment images and write overlays, masks and measurements", cmd_predict)
    predict.add_argument("--model", help=model_help)
    predict.add_argument("--out", required=True, metavar="DIR")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    predict.add_argument("--pixel-size-mm", type=parse_pixel_size, help=pixel_size_help)
    predict.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=tta_help)
    predict.add_argument("--lesion-threshold", type=parse_threshold, default="model", metavar="P|argmax|model",
                         help="lesion where its probability >= P (0..1); 'argmax': the most likely class; "
                              "default 'model': the model's calibrated choice")
    predict.add_argument("--batch-size", type=at_least_one_image, default=INFERENCE_BATCH_SIZE, help=batch_help)
    predict.add_argument("--outlines", type=parse_outline_formats, default=(), metavar="FORMATS",
                         help=f"also write the outline as {', '.join(OUTLINE_FORMATS)} (comma-separated): "
                              "GeoJSON for QuPath, an ImageJ .roi for Fiji, an SVG path; x, y in px")
    predict.add_argument("--shard", type=parse_shard, metavar="I/N",
                         help="process shard I of N of the inputs (the same 1/N whatever the file system's order; "
                              "a cluster array job runs I = 1..N), writing measurements.shard-I-of-N.csv; then "
                              "moleseg merge")
    predict.add_argument("--dicom-seg", action="store_true",
                         help="also write each mask as a DICOM Segmentation <name>_seg.dcm referencing its image "
                              "(an image that is not DICOM gets a Secondary Capture <name>_source.dcm to reference); "
                              f"<name> is {NEUTRAL_WORD}-<{NEUTRAL_ID_DIGITS} hex digits of the pixels' SHA-256>, "
                              "not the file's name, unless --dicom-identifiers")
    predict.add_argument("--dicom-identifiers", action="store_true",
                         help="copy DICOM inputs' whole header, patient and study identifiers included, into the "
                              "DICOM outputs and name them after the input files (default: only what references "
                              "the image, named after its pixels)")
    predict.add_argument("--without-names", dest="with_names", action="store_false",
                         help=f"name every output after its image's pixels ({NEUTRAL_WORD}-<{NEUTRAL_ID_DIGITS} hex "
                              "digits>, as the DICOM files and the app's exports without names are), not after the "
                              "input file: the PNGs, the outlines, the CSVs' image and output columns (the source "
                              "column left out) and the settings; stderr says which input is which, unless --quiet. "
                              "An input whose pixels give the name of an earlier one's files is not written. Not "
                              "with --dicom-identifiers or --shard")

    merge = add("merge", "join the measurement tables of moleseg predict --shard runs, checking every input "
                         "appears exactly once", cmd_merge)
    merge.add_argument("folders", nargs="+", metavar="SHARD_FOLDER", help="the --out folders of the shards")
    merge.add_argument("--out", metavar="DIR", help="where to write measurements.csv (default: the first folder)")

    score = add("score", "score predicted masks from any tool against true masks", cmd_score)
    score.add_argument("--pred", required=True, metavar="DIR")
    score.add_argument("--masks", required=True, metavar="DIR")
    score.add_argument("--json", metavar="FILE")
    score.add_argument("--csv", metavar="FILE")

    prepare = add("prepare", "write BACK/BORDER/INSIDE label images from masks", cmd_prepare)
    prepare.add_argument("--masks", required=True, metavar="DIR")
    prepare.add_argument("--out", required=True, metavar="DIR")
    border_width = options.option("border_width_px")
    prepare.add_argument("--border-width-px", type=int_at_least(int(border_width.low), int(border_width.high)),
                         required=True)
    prepare.add_argument("--shape", default=DEFAULT_SHAPE, choices=SHAPES)
    prepare.add_argument("--classes", type=int, choices=options.CLASS_COUNTS, default=DEFAULT_CLASS_COUNT)
    prepare.add_argument("--border-at-image-edge", action="store_true",
                         help="draw BORDER along the image frame too (Matlab's imerode does not)")

    compare = add("compare", "align two visits of one lesion and report what changed", cmd_compare)
    compare.add_argument("before", metavar="BEFORE", help="the earlier image")
    compare.add_argument("after", metavar="AFTER", help="the later image")
    compare.add_argument("--model", help=model_help)
    compare.add_argument("--pixel-size-mm", type=parse_pixel_size, help=pixel_size_help)
    compare.add_argument("--allow-scale", action="store_true",
                         help="fit a scale too (only when the magnification differs; a contact dermatoscope's does not)")
    compare.add_argument("--json", required=True, metavar="FILE", help="write the comparison here")
    compare.add_argument("--pdf", metavar="FILE", help="write a one-page PDF of the comparison here")
    compare.add_argument("--noise-passes", type=int_at_least(MIN_NOISE_PASSES, MAX_NOISE_PASSES), default=0,
                         metavar="K",
                         help="also estimate this lesion's noise from K simulated second photographs of each visit "
                              "(2K more segmentations; default: the published repeatability only)")

    study = add("study", "run the article's study (factors x seeds) and compare the settings' test FM", cmd_study)
    study.add_argument("--config", required=True, metavar="STUDY.yaml", help="the study file (see studies/)")
    study.add_argument("--out", required=True, metavar="DIR", help="study folder (an interrupted study continues)")
    study.add_argument("--dry-run", action="store_true", help="check the file and list every run; train nothing")
    study.add_argument("--data-root", metavar="DIR", help=STUDY_DATA_ROOT_HELP)
    bench = add("bench", "measure the machine's limits and the network's, end-to-end and training speed", cmd_bench)
    bench.add_argument("--model", help="a .keras file (default: the shipped dermoscopy model)")
    bench.add_argument("--images", metavar="DIR", help="real images for end-to-end and predict (default: synthetic)")
    bench.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    bench.add_argument("--quick", action="store_true", help="tiny sizes and repeats: checks that it runs, "
                       "figures not representative")
    bench.add_argument("--app", action="store_true", help="time the app in the system Chromium instead "
                       "(a real `moleseg serve`): first and next overlay, slider, batch, home page")
    bench.set_defaults(csv=None)
    serve = add("serve", "start the app with the server's settings (MOLESEG_* variables, MOLESEG_CONFIG file: "
                         "mode, address, port, allowed host names)", cmd_serve)
    serve.add_argument("--print-command", action="store_true", help="print the streamlit command, start nothing")
    info = add("info", "print a model file's metadata", cmd_info)
    info.add_argument("model")
    add_adopt_command(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moleseg`` console script. Warnings (e.g. a rebuilt inference cache entry) are
    printed as one line ``warning: ...`` each (:func:`moleseg.cli.common.show_warning_line`); whatever the command
    writes on stdout and stderr has its control characters escaped (:class:`moleseg.core.terminal.TerminalText`)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    with warnings.catch_warnings(), terminal_streams():  # nothing a file holds reaches the terminal as a control
        args = parser.parse_args(argv)  # its errors name arguments, file names of a glob among them
        warnings.showwarning = show_warning_line
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the command of ``args``; an error is one line ``error: ...`` on stderr and the exit status
    (:data:`~moleseg.cli.common.EXIT_DEFECT` for an error no command foresaw, whose traceback goes to the file that
    line names)."""
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
            message = first_line(error)
        print(f"error: {printable(message)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as error:  # a defect: one line naming the file that keeps its traceback (report_defect)
        print(f"error: {printable(report_defect(error))}", file=sys.stderr)
        return EXIT_DEFECT

