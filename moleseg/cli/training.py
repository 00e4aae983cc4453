"""``moleseg train`` and ``moleseg study``: one flag per training option of :mod:`moleseg.core.options`, the
configuration a run trains with, multi-worker flags, and the study runner.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from moleseg.cli.common import EXIT_OK, CommandError, ProgressBar, print_metric_table, printable, say
from moleseg.core.words import count_of

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
    given; ``name`` defaults to the run folder's name. Each value of the file is checked against its option
    (a refusal names the file); the whole configuration is checked by ``TrainConfig``, not here.

    Raises
    ------
    CommandError
        When a value of the file is outside its option's kind or range (one sentence naming the file).
    """
    from moleseg.core import options
    from moleseg.core.configfile import read_config_file

    from_file = read_config_file(args.config, args.data_root) if args.config else {}
    for item in options.OPTIONS:  # the file's own values first, so that the refusal names the file
        marker = object()
        value = options.get_value(from_file, item.name, marker)
        problems = [] if value is marker else item.problems(value)
        if problems:
            raise CommandError(f"{args.config}: {problems[0]}")
    values = options.merged(from_file, given_options(args))
    if values.get("name") is None:
        values["name"] = Path(args.out).name
    return values


def cmd_train(args: argparse.Namespace) -> int:
    from moleseg.engine import trainqueue
    from moleseg.engine.launch import run_folder_is_a_file, start_training
    from moleseg.engine.trainlock import TrainingBusy

    chief = _join_cluster(args)
    resume = args.resume and chief  # other workers of a cluster take the chief's state when they start
    run_dir = Path(args.out)
    if resume:
        config = {"epochs": given_options(args).get("epochs")}
    else:
        if run_dir.exists() and not run_dir.is_dir():
            raise CommandError("--out " + run_folder_is_a_file(printable(str(run_dir))))
        config = train_config_of(args)
    bar = ProgressBar(0, "training", args.quiet, unit="step")

    def progress(status) -> None:
        if status.phase == "train" and status.steps and status.epochs:
            bar.set_total(status.steps * status.epochs)
            loss = f"epoch {status.epoch}/{status.epochs} loss {status.loss:.4f}" if status.loss is not None else None
            bar.update_to((status.epoch - 1) * status.steps + status.step, loss)

    echo = None if args.quiet else (lambda line: bar.bar.write(line, file=sys.stderr))
    # Only the chief writes --out; another worker's request, progress and log live in a temporary folder.
    with nullcontext(None) if chief else tempfile.TemporaryDirectory(prefix="moleseg-worker-") as folder:
        job_dir = run_dir if folder is None else Path(folder) / run_dir.name
        turn = trainqueue.Turn(job_dir, "terminal")  # first come, first served with the app's queue
        try:
            status = start_training(config, job_dir, resume=resume, wait=True, origin="terminal",
                                    wait_for_lock=args.wait, cluster_worker=not chief, on_progress=progress,
                                    echo=echo, give_way=turn, on_start=turn.release)
        except TrainingBusy as error:
            raise CommandError(f"{error} (or give --wait to start when it ends)") from None
        finally:
            turn.release()
            bar.close()
    if status.status != "done":
        log = f" (see {run_dir / 'job.log'})" if chief else ""
        raise CommandError(f"the training {status.status}: {status.error or status.message}{log}")
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
    baseline = evaluation.baseline_fm
    print_metric_table(evaluation.n, {key: asdict(values) for key, values in evaluation.metrics.items()},
                       None if baseline is None else asdict(baseline))


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
    from moleseg.engine.studyplan import describe_plan
    from moleseg.engine.studyrun import checked_study, run_study
    from moleseg.studyreport import write_html

    study = checked_study(args.config, data_root=args.data_root)  # the file, every run and the data split
    if args.dry_run:
        print(describe_plan(study))
        return EXIT_OK
    rows = run_study(study, args.out, echo=lambda line: say(args, line))
    write_html(study, args.out, rows)
    say(args, f"{count_of(len(rows), 'run')} finished; results in {Path(args.out) / 'study.csv'}, study.html, verdicts.md")
    return EXIT_OK
