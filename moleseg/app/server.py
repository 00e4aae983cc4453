"""The app's server process (``moleseg serve``): Streamlit's own command line, and once the server listens, in a
background thread, the modules that ``app.py`` and its pages import loaded and the default model's background
load started, so that the first page a user opens waits for neither (the records database, SciPy, OpenCV and the
model are loaded while the browser is still starting Streamlit's frontend). Per server process.
"""

from __future__ import annotations

import ast
import importlib
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


#: Seconds the warm-up waits for the server to listen before it gives up (it then loads nothing).
LISTEN_TIMEOUT_S: float = 60.0
#: Seconds between two looks at whether the server listens.
LISTEN_POLL_S: float = 0.1
#: Libraries Streamlit imports only when a page draws its first table (``st.dataframe``: the Analyse page's model
#: details), loaded with the pages' own modules.
TABLE_MODULES: tuple[str, ...] = ("pandas", "pyarrow")
#: File mode creation mask of the server process, inherited by the trainings and studies it starts: every file
#: (0600) and folder (0700) they create is the server's account's only, whatever the operator's umask.
SERVER_UMASK: int = 0o077
#: What the server's output says once the warm-up is done.
WARM_UP_WORDS: str = "the pages' modules are loaded"


def top_level_imports(script: Path) -> list[str]:
    """The modules a script imports at its top level, in order and once each: ``import a.b`` gives ``a.b``,
    ``from a import b, c`` gives ``a``, ``a.b`` and ``a.c`` (a name that is not a module is skipped when
    loaded); ``__future__`` and relative imports are left out. Imports inside functions are not taken: a page
    imports what it needs only on demand (TensorFlow, ...) there."""
    found: list[str] = []
    for node in ast.parse(script.read_text(encoding="utf-8"), filename=str(script)).body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module != "__future__":
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*"]
    return list(dict.fromkeys(found))


def page_scripts(app_file: Path) -> list[Path]:
    """``app_file`` and the page scripts its navigation runs (:data:`moleseg.app.ui.PAGE_FILES`)."""
    from moleseg.app.ui import PAGE_FILES

    return [app_file] + [app_file.parent / name for name in PAGE_FILES.values()]


def load_modules(names: Sequence[str]) -> list[str]:
    """Import each module of ``names``; the names loaded. A name that is not a module (the function of
    ``from a import f``) is skipped, and so is a module that fails to import: the page that imports it reports
    that when it runs."""
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- not a module, or its page's own run reports the error
            continue
        loaded.append(name)
    return loaded


def listening(address: str, port: int) -> bool:
    """Whether a TCP server accepts connections on ``address`` (``0.0.0.0`` or empty: this machine) and
    ``port``."""
    host = "127.0.0.1" if address in ("", "0.0.0.0") else ("::1" if address == "::" else address)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until_listening(timeout_s: float = LISTEN_TIMEOUT_S) -> bool:
    """Wait until the Streamlit server of this process listens (its address and port options): True, or False
    when it does not within ``timeout_s`` seconds."""
    import streamlit as st

    deadline = time.monotonic() + timeout_s
    while not (st.runtime.exists() and listening(str(st.get_option("server.address") or ""),
                                                 int(st.get_option("server.port")))):
        if time.monotonic() > deadline:
            return False
        time.sleep(LISTEN_POLL_S)
    return True


def warm_up(app_file: Path) -> list[str]:
    """Import the modules of :func:`page_scripts` (:func:`top_level_imports`) and :data:`TABLE_MODULES`; the
    names loaded."""
    names = [name for script in page_scripts(app_file) for name in top_level_imports(script)]
    return load_modules(list(dict.fromkeys(names + list(TABLE_MODULES))))


def warm_up_once_listening(app_file: Path) -> None:
    """Once the server listens: :func:`moleseg.app.ui.startup` (which the first page would otherwise start) and
    :func:`warm_up`, then one line on the operator's console: how many modules were loaded and how long it took.
    The lines name no file and carry no error text (the server writes no user data to its output): a failed
    start-up is said without its reason, which the first page shows."""
    if not wait_until_listening():
        print(f"moleseg: the server did not listen within {LISTEN_TIMEOUT_S:.0f} s; nothing preloaded",
              file=sys.stderr, flush=True)
        return
    started = time.perf_counter()
    from moleseg.app import ui

    try:
        ui.startup()  # the default model's background load (its own thread) and the session folders' sweep
    except Exception:  # noqa: BLE001 -- the first page runs it again and shows the error there
        print("moleseg: the start-up housekeeping failed; the first page shows why", file=sys.stderr, flush=True)
    loaded = warm_up(app_file)
    print(f"moleseg: {WARM_UP_WORDS} ({len(loaded)} modules, {time.perf_counter() - started:.1f} s)",
          file=sys.stderr, flush=True)


def restrict_file_modes() -> None:
    """Set this process's file mode creation mask to :data:`SERVER_UMASK`: ``moleseg serve`` (:func:`main`) and
    ``serve_app.py`` (a bare ``streamlit run serve_app.py``), in either mode: patients' pictures, users' runs and
    names are never readable by other local accounts."""
    os.umask(SERVER_UMASK)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m moleseg.app.server run APP_FILE [streamlit options]``: Streamlit's command line with these
    arguments under :data:`SERVER_UMASK`, and :func:`warm_up_once_listening` of ``APP_FILE`` (of ``app.py`` when
    it is ``serve_app.py``, the ASGI entry that runs it) in a daemon thread."""
    from streamlit.web import cli

    from moleseg.core.config import APP_FILE, SERVE_FILE

    restrict_file_modes()
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "run":
        target = Path(args[1]).resolve()
        pages_of = APP_FILE if target == SERVE_FILE.resolve() else target  # serve_app.py runs app.py's pages
        threading.Thread(target=warm_up_once_listening, args=(pages_of,), name="moleseg-warm-up",
                         daemon=True).start()
    cli.main(args=args, prog_name="streamlit")


if __name__ == "__main__":
    main()
