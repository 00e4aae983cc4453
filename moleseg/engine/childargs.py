"""The arguments of the background processes the app starts (a training's runner, a study), passed in their
environment instead of on their command line.

Every local account of the machine reads a process's command line (``ps``, ``/proc/PID/cmdline``), while its
environment is its own account's only (``/proc/PID/environ``, mode 0400). These arguments name a user's run and
study folders (``users/<name>-<hash>/runs/<the name they typed>``) and, for a study, the user's sign-in name:
:func:`child_command` puts them in :data:`ARGUMENTS_ENV` and the child's ``main`` reads them back with
:func:`child_arguments`, which also removes them from its environment, so that the processes it starts in turn
do not carry them on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

__all__ = ["ARGUMENTS_ENV", "child_arguments", "child_command"]

#: Environment variable holding a child's arguments: a JSON list of strings.
ARGUMENTS_ENV: str = "MOLESEG_CHILD_ARGUMENTS"


def child_command(python: str | None, module: str, arguments: Sequence[str],
                  environ: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """``(command, environment)`` that run ``python -m module`` (``python``: default this interpreter) with
    ``arguments`` in the environment ``environ`` (default this process's) under :data:`ARGUMENTS_ENV`."""
    environment = dict(os.environ if environ is None else environ)
    environment[ARGUMENTS_ENV] = json.dumps([str(argument) for argument in arguments])
    return [python or sys.executable, "-m", module], environment


def child_arguments(argv: Sequence[str] | None = None) -> list[str]:
    """The arguments of a child's ``main``: ``argv`` when given; else those :func:`child_command` passed (taken
    out of ``os.environ``), followed by any on the command line.

    Raises
    ------
    SystemExit
        :data:`ARGUMENTS_ENV` does not hold a JSON list of strings (status 2, as a bad command line).
    """
    if argv is not None:
        return list(argv)
    text = os.environ.pop(ARGUMENTS_ENV, None)
    if text is None:
        return sys.argv[1:]
    try:
        given = json.loads(text)
    except ValueError:
        given = None
    if not (isinstance(given, list) and all(isinstance(argument, str) for argument in given)):
        raise SystemExit(f"{ARGUMENTS_ENV} does not hold a JSON list of strings")
    return [*given, *sys.argv[1:]]
