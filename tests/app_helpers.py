"""Helpers of the app tests (tests/test_app_*.py): an AppTest of app.py and its texts (synthetic moles are in
tests/synthetic.py, the isolated app folders are the ``app_folders`` fixture of tests/conftest.py)."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from moleseg.tools.bench_browser import CHROMIUM_ARGS, free_port, healthy, stop_server  # noqa: F401 (CHROMIUM_ARGS: the browser fixture's)

APP = Path(__file__).resolve().parents[1] / "app.py"
#: What the served app runs (``moleseg serve``'s entry: app.py behind the media gate).
SERVE_APP = APP.parent / "serve_app.py"
#: Screenshots and server logs of the tests that serve the app (gitignored; removed by ``make clean``).
ARTIFACTS = APP.parent / "test-artifacts"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


#: Starts of a test server, each on a new free port, when another process took the port meanwhile.
SERVER_START_TRIES = 3


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (Linux's ``/proc``; True where it is not
    there, nothing to go by): a free port may be taken by another process between the look and the server's bind,
    and another test's server then answers on it."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return True
    sockets = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for fields in (row.split() for row in rows):  # local address, remote address, state (0A: LISTEN), ..., inode
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                sockets.add(f"socket:[{fields[9]}]")
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(descriptor) in sockets:
                return True
    return False


@contextlib.contextmanager
def streamlit_server(env: dict[str, str], log_name: str, timeout: float = 60, serve: bool = False,
                     script: Path = SERVE_APP) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run serve_app.py`` (app.py behind the media gate, as ``moleseg serve`` runs it; or another
    ``script``) on a free local port (with ``serve``: ``moleseg serve``, the server's settings
    from ``env``), its output in ``test-artifacts/<log_name>.log``; yields ``(URL, server process)`` once
    ``/_stcore/health`` answers ``ok`` from it, and stops the server however the test ends. A port another
    process took before the server bound it is left for a new one (:data:`SERVER_START_TRIES` starts)."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{log_name}.log"
    for attempt in range(1, SERVER_START_TRIES + 1):
        port = free_port()
        command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                   "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
                   "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
        server_env = env
        if serve:
            command, server_env = [sys.executable, "-m", "moleseg", "serve"], {**env, "MOLESEG_PORT": str(port)}
        url = f"http://127.0.0.1:{port}"
        # a new file for each start: whatever an earlier start's process (or a process it forked) still writes
        # goes to the file it opened, not into this start's log
        log_path.unlink(missing_ok=True)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=APP.parent, env=server_env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT)
            try:
                answered = healthy(url, process, timeout)
                if answered and listens_on(process.pid, port):
                    break
                stop_server(process)
                log.flush()
                taken = answered or f"Port {port} is not available" in tail(log_path)  # or ours said so
                if not taken or attempt == SERVER_START_TRIES:
                    raise RuntimeError(f"streamlit did not start (exit code {process.returncode}); "
                                       f"{log_path}:\n{tail(log_path)}")
            except BaseException:
                stop_server(process)
                raise
    try:
        yield url, process
    finally:
        stop_server(process)


def scan_components_once() -> None:
    """Make Streamlit's scan of the installed packages for components, which each AppTest's first run does
    (about 0.13 CPU-s over the environment's ~200 distributions), once per test process: the installed
    packages do not change while the tests run."""
    from streamlit.components.v2 import manifest_scanner

    scan = manifest_scanner.scan_component_manifests
    if not hasattr(scan, "cache_info"):
        manifest_scanner.scan_component_manifests = functools.cache(scan)


def compile_scripts_once() -> None:
    """Compile each script an AppTest runs (app.py and its pages) once per test process, as a served app's
    one ``ScriptCache`` does for all of its sessions: every AppTest run makes a new cache, and compiling
    app.py and the page again was about a seventh of an Analyse page test's run. The code is kept by the
    script's path and its whole text, so a script written anew is compiled anew."""
    from streamlit import config
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    compile_script = ScriptCache.get_bytecode
    if hasattr(compile_script, "compiled"):
        return
    compiled: dict[tuple[str, bytes, bool], Any] = {}

    def get_bytecode(self: ScriptCache, script_path: str) -> Any:
        path = os.path.abspath(script_path)
        key = (path, Path(path).read_bytes(), bool(config.get_option("runner.magicEnabled")))
        if key not in compiled:
            compiled[key] = compile_script(self, script_path)
        return compiled[key]

    get_bytecode.compiled = compiled  # type: ignore[attr-defined]
    ScriptCache.get_bytecode = get_bytecode  # type: ignore[method-assign]


def app_test(page: str | None = None, timeout: float = 60, empty_cache: bool = True):
    """An AppTest of app.py, run once, switched to ``page`` (a ``moleseg.app.ui.PAGE_FILES`` value) and run.
    The server's analysis cache is emptied first unless ``empty_cache`` is false (the tests of one process
    share it, as the sessions of a server do)."""
    from streamlit.testing.v1 import AppTest

    from moleseg.app import ui

    scan_components_once()
    compile_scripts_once()
    if empty_cache:
        ui.analysis_store().clear()
    at = AppTest.from_file(str(APP), default_timeout=timeout).run()
    if page:
        at.switch_page(page).run()
    return at


def analysed_mole(image: Any, name: str = "mole.png"):
    """The Analyse page (AppTest) with ``image`` (an RGB ``uint8`` array) uploaded as ``name`` and analysed by
    the classical model."""
    from synthetic import png_bytes

    from moleseg.app.ui import PAGE_FILES

    at = app_test(PAGE_FILES["analyse"])
    at.selectbox(key="analyse_model").set_value("classical").run()
    at.file_uploader(key="analyse_upload_files").set_value((name, png_bytes(image), "image/png")).run()
    return at


def run_until(at, condition: Callable[[Any], bool], timeout: float = 60, pause: float = 0.2):
    """Run ``at`` again (as the page's polling fragment would) until ``condition(at)`` holds; fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition(at):
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(pause)
        at.run()
    return at


def texts(elements) -> list[str]:
    """The values of Streamlit elements, as strings."""
    return [str(element.value) for element in elements]


class _TableCells(HTMLParser):
    """The cells of an HTML table, row by row: ``[tag, text, small text, rowspan]``, ``<style>`` skipped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[list[Any]]] = []
        self._where: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._where.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self.rows[-1].append([tag, "", "", int(dict(attrs).get("rowspan") or 1)])

    def handle_endtag(self, tag: str) -> None:
        self._where.pop()

    def handle_data(self, data: str) -> None:
        if self.rows and self.rows[-1] and "style" not in self._where and self._where[-1] != "tr":
            self.rows[-1][-1][2 if self._where[-1] == "small" else 1] += data


def html_table_rows(text: str) -> list[dict[str, str]]:
    """The rows of a table as :func:`moleseg.app.results.measurement_html` writes it, as dicts keyed by its
    column headings in lower case and ``meaning`` (the small type under a row's heading), each cell's text as
    the browser gets it (entities decoded); a row heading that spans rows counts for each. ``[]`` for HTML
    without a table."""
    parser = _TableCells()
    parser.feed(str(text))
    if not parser.rows:
        return []
    headings = [cell[1].lower() for cell in parser.rows[0]]
    rows, heading, left = [], None, 0
    for cells in parser.rows[1:]:
        if cells[0][0] == "th":
            heading, left = cells[0], cells[0][3]
            cells = cells[1:]
        left -= 1
        if heading is None or left < 0:
            raise AssertionError(f"a row without its heading: {cells}")
        rows.append({headings[0]: heading[1], **dict(zip(headings[1:], (cell[1] for cell in cells))),
                     "meaning": heading[2]})
    return rows


def forged_run(at, key: str, **value: Any):
    """Run ``at`` again with the widget of user key ``key`` sending ``value`` (one ``WidgetState`` field, e.g.
    ``trigger_value=True``, ``double_value=1e-300``), whatever the widget allows: what a browser's own message
    (a ``rerun_script`` BackMsg over the WebSocket) may carry, where AppTest's setters refuse (a disabled button)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    states = at._tree.get_widget_states()
    (widget_id,) = [node.id for node in at._tree if getattr(node, "key", None) == key and hasattr(node, "id")]
    kept = [state for state in states.widgets if state.id != widget_id]
    del states.widgets[:]
    forged = WidgetState(id=widget_id)
    ((field, sent),) = value.items()
    if field.endswith("_array_value"):
        getattr(forged, field).data.extend(sent)
    else:
        setattr(forged, field, sent)
    states.widgets.extend([*kept, forged])
    return at._run(states)
