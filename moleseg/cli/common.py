"""What every ``moleseg`` command shares: exit statuses, the one-line ``CommandError``, the progress bar,
messages, checked output files and folders, pairing and model loading, and the printed summaries.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from moleseg.core.config import BASELINE_NAME
from moleseg.core.errors import first_line, printable
from moleseg.core.terminal import show_warning_line, terminal_text  # noqa: F401 (show_warning_line: the CLI's)
from moleseg.core.words import count_of, noun_for


EXIT_OK, EXIT_ERROR = 0, 2
#: Exit status when the reader of standard output went away (``moleseg info m.keras | head``): 128 + SIGPIPE,
#: as a Unix tool killed by it.
EXIT_BROKEN_PIPE = 141
#: Exit status of an error moleseg did not foresee (a defect): ``EX_SOFTWARE`` of BSD's ``sysexits.h``.
EXIT_DEFECT = 70
#: Name prefix of the private file (0600, in the system's temporary folder) that keeps such an error's traceback.
DEFECT_FILE_PREFIX = "moleseg-error-"


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def report_defect(error: BaseException) -> str:
    """The one line that stands for an error no command foresaw, its traceback written to a new private file
    (``DEFECT_FILE_PREFIX*.txt``, 0600, in :func:`tempfile.gettempdir`) that the line names: the terminal gets no
    stack trace, the maintainers get the whole of it in a report (its control characters escaped as on the
    terminal, :func:`moleseg.core.terminal.terminal_text`: the file is read with ``cat``). When no such file can be
    written the line says so."""
    import tempfile
    import traceback

    summary = f"{type(error).__name__}: {first_line(error)}"
    try:
        handle, name = tempfile.mkstemp(prefix=DEFECT_FILE_PREFIX, suffix=".txt")
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(terminal_text("".join(traceback.format_exception(error))))  # read with cat
    except OSError as failure:
        return (f"an unexpected error, a defect of moleseg ({summary}); its details could not be kept "
                f"({failure.strerror or type(failure).__name__})")
    return f"an unexpected error, a defect of moleseg ({summary}); please report it with {name}"


class ProgressBar:
    """A tqdm bar with ETA on a terminal, silent with ``--quiet`` or when stderr is not a terminal."""

    def __init__(self, total: int, description: str, quiet: bool, unit: str = "image") -> None:
        from tqdm import tqdm

        stream = getattr(sys.stderr, "raw", sys.stderr)  # its own carriage returns (TerminalText)
        self.bar = tqdm(total=total, desc=printable(description), unit=unit, file=stream,
                        disable=quiet or not stream.isatty(), dynamic_ncols=True, leave=True)

    def update_to(self, done: int, postfix: str | None = None) -> None:
        self.bar.update(max(0, done - self.bar.n))
        if postfix:
            self.bar.set_postfix_str(printable(postfix), refresh=False)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def say(args: argparse.Namespace, message: str) -> None:
    """Print ``message`` on stderr unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def paired_files(images: str | Path, masks: str | Path, args: argparse.Namespace):
    """The image/mask pairs of two folders (:func:`moleseg.core.pairing.pair_folders`), its summary said on
    stderr: with ``--quiet`` only when it names a problem (unpaired files, conflicts, pairs of different sizes,
    which are then resized and scored, warnings), which ``--quiet`` never hides."""
    from moleseg.core.pairing import pair_folders

    report = pair_folders(images, masks)
    if report.ok:
        say(args, report.summary())
    else:
        print(report.summary(), file=sys.stderr, flush=True)
    return report.pairs


def open_model(spec: str, tta: bool | None = None):
    """The segmenter of ``spec`` (a ``.keras`` file or ``classical``); ``tta``: flip averaging, None for the
    model's own setting."""
    from moleseg.network.loading import load_segmenter

    return load_segmenter(spec, test_time_augmentation=tta)


def write_table(path: Path, rows: Sequence[dict]) -> None:
    """``rows`` as a CSV file written atomically."""
    from moleseg.core.atomic import atomic_write
    from moleseg.core.report import measurements_csv

    atomic_write(path, measurements_csv(list(rows)))


#: The columns of the command line's metric tables, in order.
SUMMARY_STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max")


def print_metric_table(n: int, metrics: Mapping[str, Mapping[str, float]],
                       baseline_fm: Mapping[str, float] | None = None) -> None:
    """A table of metrics over ``n`` images, one row each (:data:`SUMMARY_STATISTICS`), and the classical
    baseline's FM (mean, min, max) when given."""
    print(f"{'':10s} " + " ".join(f"{name:>8s}" for name in SUMMARY_STATISTICS) + f"   (n = {n})")
    for key, values in metrics.items():
        print(f"{key:10s} " + " ".join(f"{values[name]:8.4f}" for name in SUMMARY_STATISTICS))
    if baseline_fm is not None:
        print(f"{BASELINE_NAME} FM: mean {baseline_fm['mean']:.4f}, min {baseline_fm['min']:.4f}, "
              f"max {baseline_fm['max']:.4f}")


def print_summary(summary: dict, baseline: dict | None = None) -> None:
    """The metrics table of an evaluation summary (mean, std, min, max), and the baseline's FM when given."""
    keys = [k for k in ("fm", "cm", "cr", "jaccard", "hd95", "border_fm") if k in summary]
    print_metric_table(summary["n"], {key: summary[key] for key in keys},
                       baseline["fm"] if baseline and baseline.get("n") else None)


def checked_output(option: str, value: str) -> Path:
    """The file of ``--json``/``--csv``, checked before any work: not a folder, in a writable folder."""
    path = Path(value)
    if path.is_dir():
        raise CommandError(f"{option} {printable(value)} is a folder: give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise CommandError(f"{option} {printable(value)}: the folder {printable(str(folder))} does not exist")
    check_writable(folder, f"{option} {printable(value)}")
    return path


def check_writable(folder: Path, what: str) -> None:
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


def checked_outputs(args: argparse.Namespace) -> dict[str, Path]:
    """``{"json": path, "csv": path}`` of the given ``--json``/``--csv`` options, checked (see above)."""
    return {key: checked_output(f"--{key}", getattr(args, key)) for key in ("json", "csv") if getattr(args, key)}


def write_outputs(outputs: dict[str, Path], summary: dict, table: list[dict]) -> int:
    """Write the checked ``--json``/``--csv`` files after the summary was printed; EXIT_ERROR if one fails."""
    from moleseg.engine.runs import write_json

    status = EXIT_OK
    for key, path in outputs.items():
        try:
            if key == "json":
                write_json(path, summary)
            else:
                write_table(path, table)
        except OSError as error:
            print(f"error: --{key} {printable(str(path))} could not be written ({error.strerror or error}); "
                  "the summary above is complete", file=sys.stderr)
            status = EXIT_ERROR
    return status


def print_mask_warnings(failures) -> None:
    """One line per empty or full true mask, and how many there were."""
    for name, text in failures.warnings:
        print(f"warning: {printable(text)} (scored anyway: {printable(name)})", file=sys.stderr)
    if failures.warnings:
        print(f"warning: {failures.empty_masks} empty and {failures.full_masks} full true "
              f"{noun_for(failures.empty_masks + failures.full_masks, 'mask')} were scored; they pull the mean down",
              file=sys.stderr)


def skipped_line(name: str, reason: str) -> str:
    """``skipped <name>: <reason>``, the name written once when the reason already starts with it."""
    text = reason if reason.startswith(f"{name}:") else f"{name}: {reason}"
    return f"skipped {printable(text)}"


def failures_exit(failures: list[tuple[str, str]]) -> int:
    for name, reason in failures:
        print(skipped_line(name, reason), file=sys.stderr)
    if failures:
        print(f"error: {count_of(len(failures), 'file')} could not be processed", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def int_at_least(low: int, at_most: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number ``>= low`` and, when ``at_most`` is given, ``<= at_most``
    (``--batch-size``, ``--border-width-px``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"must be at most {at_most}, not {value}")
        return value

    return parse


def parse_pixel_size(text: str) -> float:
    """``--pixel-size-mm``: millimetres per pixel, as the app takes them
    (:func:`moleseg.core.devices.checked_pixel_size`)."""
    from moleseg.core.devices import checked_pixel_size

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of mm per pixel") from None
    try:
        return checked_pixel_size(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}, not {text}") from None


def check_out_not_an_input(out: str, inputs: Sequence[str], harm: str) -> None:
    """Refuse an ``--out`` that is one of the input folders of predict/prepare; ``harm`` says what writing
    there would do."""
    target = Path(out).resolve()
    if any(Path(item).is_dir() and Path(item).resolve() == target for item in inputs):
        raise CommandError(f"--out {printable(out)} is also an input folder: {harm}; choose another folder")


@contextmanager
def output_folder(path: str) -> Iterator[Path]:
    """``--out`` of predict, prepare and merge, created for the command's work (``with output_folder(out) as
    folder``); CommandError when it is a file, cannot be created or cannot be written into (one line before any
    image, not one failure per image). The folders this call created (``--out`` and any parent it lacked) are
    removed again when the work leaves them empty, failed or not: a command that writes nothing leaves no stray
    folder, and a folder with anything in it (or one that was there before) is kept."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {printable(path)} is a file, not a folder: choose a folder name")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]  # the deepest first
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"cannot create the output folder {printable(path)} "
                               f"({error.strerror or error})") from error
        check_writable(out, f"--out {printable(path)}")
        yield out
    finally:
        for folder in created:
            try:
                folder.rmdir()  # only an empty folder goes: nothing written is ever removed
            except OSError:
                break
