"""What a moleseg process writes on a terminal (or in a log read with ``tail -f``): names and texts from files
(file names, study labels, shard table cells, log lines) with their control characters escaped, so that none
moves the cursor, clears the screen or retitles the window (:func:`terminal_text`), and the output streams that
escape whatever is written on them (:func:`terminal_streams`).
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager, suppress
from typing import Iterator, TextIO

from moleseg.core.errors import printable

#: Characters a text for a terminal keeps as they are (:func:`terminal_text`).
TERMINAL_KEPT: str = "\n\t"


def terminal_text(text: str) -> str:
    """``text`` as a moleseg process writes it on its output (:class:`TerminalText`) and a log line is written
    (:class:`moleseg.engine.runs.RunLog`, read with ``tail -f``): :func:`printable` but for the line ends and tabs
    of :data:`TERMINAL_KEPT`, so that no file name, study label or shard table cell moves the cursor, clears the
    screen or retitles the window."""
    if text.isprintable():
        return text
    pieces = re.split(f"([{re.escape(TERMINAL_KEPT)}])", text)
    return "".join(piece if piece in TERMINAL_KEPT else printable(piece) for piece in pieces if piece)


class TerminalText:
    """``sys.stdout`` or ``sys.stderr`` while a command runs (:func:`moleseg.cli.main`, and the training runner
    whose output is ``job.log``): whatever it writes goes through :func:`terminal_text`, whichever module wrote it
    (a message, the pairing summary, a study's plan, a training's log line, a warning); everything else
    (``isatty``, ``fileno``, ``flush``) is the stream's own. The command line's progress bar writes to the stream
    itself (:attr:`raw`): its carriage returns are its own."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(terminal_text(text))
        return len(text)

    def writelines(self, lines) -> None:  # noqa: ANN001 (io's signature)
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.raw, name)


@contextmanager
def terminal_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as :class:`TerminalText` inside the ``with``, restored after it."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalText(sys.stdout), TerminalText(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def show_warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: TextIO | None = None, line: str | None = None) -> None:
    """Print a warning as one line ``warning: TEXT`` on stderr (or ``file``), without Python's source location
    and code line: the :func:`warnings.showwarning` (same parameters) of the command line and of the training
    runner (whose output is ``job.log``: a name with a line end makes no line of its own)."""
    text = str(message).strip()
    text = text.splitlines()[0] if text else category.__name__
    with suppress(OSError):  # nowhere to say it: the command goes on
        print(f"warning: {printable(text)}", file=file if file is not None else sys.stderr)
