"""``moleseg train`` and ``moleseg study``: one flag per training option of :mod:`moleseg.core.options`, the
configuration a run trains with, multi-worker flags, and the study runner.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from moleseg.cli.common import EXIT_ERROR, EXIT_OK, CommandError, ProgressBar, print_summary, printable, say

if TYPE_CHECKING:
    from moleseg.core.options import Option


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
    from moleseg.core import options
    from moleseg.engine.runs import RunFiles
    from moleseg.network.train import TrainConfig, TrainingCancelled, train

    chief = _join_cluster(args)
    run_dir = Path(args.out)
    if args.resume and chief:
        if not RunFiles(run_dir).config.is_file():
            raise CommandError(f"{run_dir}: nothing to resume (no {RunFiles.CONFIG} in it)")
        try:
            saved = json.loads(RunFiles(run_dir).config.read_text(encoding="utf-8"))
        except (ValueError, OSError) as error:
            raise CommandError(f"{RunFiles(run_dir).config}: damaged, not a readable JSON file ({error}); "
                               "the run cannot be resumed") from error
        if not isinstance(saved, dict):
            raise CommandError(f"{RunFiles(run_dir).config}: damaged, not a training configuration")
        epochs = given_options(args).get("epochs")
        config = TrainConfig.from_dict({**saved, **({"epochs": epochs} if epochs else {})})
    else:
        if run_dir.exists() and not run_dir.is_dir():
            raise CommandError(f"--out {printable(str(run_dir))} is a file, not a folder: choose a folder name for the run")
        if RunFiles(run_dir).config.is_file() and not args.resume:
            raise CommandError(f"{run_dir} already holds a run: use --resume to continue it or choose another --out")
        values = train_config_of(args)
        for pair in options.FOLDER_PAIRS:
            for folder in (folder for key in pair for folder in values[key] or []):
                if not Path(folder).is_dir():
                    raise CommandError(f"folder not found: {folder}")
        config = TrainConfig.from_dict(values)
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
        print_summary(evaluation, evaluation.get("baseline"))
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


def cmd_study(args: argparse.Namespace) -> int:
    from moleseg.engine.study import check_study, describe_plan, load_study, resolve_data, run_study

    study = load_study(args.config, data_root=args.data_root)
    problems = check_study(study)
    if problems:
        for problem in problems:
            print(f"error: {args.config}: {problem}", file=sys.stderr)
        return EXIT_ERROR
    resolve_data(study, None)  # the data folders and the split rule, before anything trains
    if args.dry_run:
        print(describe_plan(study))
        return EXIT_OK
    rows = run_study(study, args.out, parallel=args.parallel, echo=lambda line: say(args, line))
    say(args, f"{len(rows)} run(s) finished; results in {Path(args.out) / 'study.csv'}, study.html, verdicts.md")
    return EXIT_OK
