"""The served app and the browser that the app benchmark (:mod:`moleseg.tools.bench_app`) and the browser tests
drive: the system Chromium's path and flags, ``moleseg serve`` on a free local port (started, checked healthy,
stopped), the CPU seconds a process tree has used (from ``/proc``), and :class:`SliderTimeline`, what a page sends and
receives while it is measured. TensorFlow and Streamlit are not imported here."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The system Chromium the benchmark and the browser tests drive.
CHROMIUM_PATH: str = "/usr/bin/chromium"
#: Chromium's flags for a headless run on a server without a GPU.
CHROMIUM_ARGS: list[str] = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_server(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop a server process: terminate it, kill it after ``grace_s`` seconds, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace_s)


def healthy(url: str, process: subprocess.Popen, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Wait until the Streamlit server at ``url`` answers ``ok`` on ``/_stcore/health``: True, or False when
    ``process`` exits first or ``timeout_s`` seconds pass."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(poll_s)
    return False


@contextlib.contextmanager
def served_app(data_dir: Path, log_path: Path, timeout_s: float = 120.0,
               environ: dict[str, str] | None = None) -> Iterator[tuple[str, float, int]]:
    """``moleseg serve`` on a free local port, its data, runs and session folders in ``data_dir`` and its
    output in ``log_path``; yields ``(URL, seconds from the start to the health check's "ok", process id)`` and
    stops the server however the block ends."""
    from moleseg.core.config import DATA_DIR_ENV

    port = free_port()
    env = {**(os.environ if environ is None else environ), "MOLESEG_PORT": str(port),
           DATA_DIR_ENV: str(data_dir / "records"), "MOLESEG_RUNS_DIR": str(data_dir / "runs"),
           "MOLESEG_TMPDIR": str(data_dir)}
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "moleseg", "serve"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            if not healthy(url, process, timeout_s):
                raise RuntimeError(f"moleseg serve did not start (exit code {process.poll()}); see {log_path}")
            yield url, time.perf_counter() - started, process.pid
        finally:
            stop_server(process)


def _process(pid: int) -> tuple[int, str, float] | None:
    """``(parent id, command name, CPU seconds used)`` of a live process (``/proc/<pid>/stat``: its own and that of
    its children it has waited for, such as a browser's closed tabs); None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after the name: state, parent, ..., user time, system time
    return int(fields[1]), text[text.index("(") + 1:text.rindex(")")], \
        sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime, stime, cutime, cstime


def tree_cpu_s(root: int, name_prefix: str = "") -> float:
    """CPU seconds used so far by the live processes of ``root``'s tree (itself and its descendants) whose command
    name starts with ``name_prefix``, with the children each has waited for; 0.0 where there is no ``/proc``."""
    processes = {}
    for entry in Path("/proc").glob("[0-9]*"):
        found = _process(int(entry.name))
        if found is not None:
            processes[int(entry.name)] = found
    tree, added = {root}, True
    while added:
        grown = tree | {pid for pid, (parent, _, _) in processes.items() if parent in tree}
        added, tree = grown != tree, grown
    return sum(cpu for pid, (_, name, cpu) in processes.items() if pid in tree and name.startswith(name_prefix))


def _self_cpu_s() -> float:
    """CPU seconds this process alone has used (every thread)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def closed_counting(browser: Any) -> tuple[float, float]:
    """Close ``browser``, first reading ``(this run's own CPU s, this process's alone)``: own = this process, its
    waited-for children (the servers) and its live descendants (the browser and Playwright's driver, whose CPU
    no ``wait()`` ever counts), so that :func:`after_closing` can tell the machine's other work from the run's."""
    alone = _self_cpu_s()
    own = max(tree_cpu_s(os.getpid()), alone)
    browser.close()
    return own, alone


def after_closing(at_close: tuple[float, float]) -> dict[str, Any]:
    """:func:`moleseg.tools.bench_machine.conditions` now, its own CPU the run's (:func:`closed_counting`'s
    reading plus what this process used since), not the waited-for processes' alone."""
    from moleseg.tools.bench_machine import conditions

    after = conditions()
    own, alone = at_close
    after["own_cpu_s"] = own + _self_cpu_s() - alone
    return after


class SliderTimeline:
    """What a page sends and receives while it is measured (a slider pressed, a batch dropped), with the time of
    each in ms from :meth:`start`: ``press``, ``rerun request`` (a message the page sends), ``messages``
    (consecutive messages from the server: a run's session status, its elements and its end, counted and their
    bytes summed; a gap between bursts is the server computing), ``picture request <file>`` / ``picture loaded
    <file>`` (``/media/`` files, with their bytes), ``upload request <file>`` / ``upload stored <file>`` (files
    sent to the uploader, with their bytes) and what the measurement waits for (``overlay visible``);
    :meth:`totals` sums them, with the CPU seconds each process group used since :meth:`start` when ``cpu``
    samples them (``{"server": s, "browser": s}``, :func:`tree_cpu_s`). Watch a page before it loads (its
    websocket is opened then). The messages are not decoded: the developer tools do not import Streamlit
    (``pyproject.toml``'s import contracts)."""

    #: The requests recorded: ``{part of the URL: (what, the word when done, the size recorded when done)}``.
    FILES: dict[str, tuple[str, str, str]] = {"/media/": ("picture", "loaded", "responseBodySize"),
                                              "/_stcore/upload_file/": ("upload", "stored", "requestBodySize")}

    def __init__(self, page: Any, cpu: Callable[[], dict[str, float]] | None = None) -> None:
        self.events: list[list[Any]] = []
        self._start = time.perf_counter()
        self._cpu = cpu
        self._cpu_start: dict[str, float] = cpu() if cpu else {}
        page.on("websocket", self._watch)
        page.on("request", lambda request: self._request(request.url))
        page.on("requestfinished", self._loaded)

    def start(self) -> None:
        """Forget what came before and count from now."""
        self.events, self._start = [], time.perf_counter()
        self._cpu_start = self._cpu() if self._cpu else {}

    def add(self, what: str, size: int = 0) -> None:
        at = round(1000 * (time.perf_counter() - self._start), 1)
        last = self.events[-1] if self.events else None
        if what == "messages" and last is not None and last[1] == "messages":
            last[2], last[3], last[4] = last[2] + 1, last[3] + size, at  # one burst: counted, summed, its end kept
        else:
            self.events.append([at, what, 1, size, at])

    def _kind(self, url: str) -> tuple[str, str, str] | None:
        return next((kind for part, kind in self.FILES.items() if part in url), None)

    def _request(self, url: str) -> None:
        if (kind := self._kind(url)) is not None:
            self.add(f"{kind[0]} request {url.rsplit('/', 1)[-1][:12]}")

    def _loaded(self, request: Any) -> None:
        if (kind := self._kind(request.url)) is None:
            return
        try:
            size = max(0, int(request.sizes().get(kind[2], 0)))  # -1: not known (e.g. from the cache)
        except Exception:  # playwright's Error: the page or its request is gone
            size = 0
        self.add(f"{kind[0]} {kind[1]} {request.url.rsplit('/', 1)[-1][:12]}", size)

    def totals(self) -> str:
        """One line of what came in since :meth:`start`: the server's messages (count, bytes) and the pictures
        loaded (count, bytes)."""
        messages = [event for event in self.events if event[1] == "messages"]
        pictures = [event for event in self.events if event[1].startswith("picture loaded")]
        cpu = self._cpu() if self._cpu else {}
        used = "".join(f", {name} CPU {seconds - self._cpu_start.get(name, 0.0):.2f} s"
                       for name, seconds in cpu.items())
        return (f"received {sum(e[2] for e in messages)} messages ({sum(e[3] for e in messages):,} B), "
                f"{len(pictures)} pictures ({sum(e[3] for e in pictures):,} B){used}")

    def _watch(self, socket: Any) -> None:
        socket.on("framesent", lambda payload: self.add("rerun request", len(payload)))
        socket.on("framereceived", lambda payload: self.add("messages", len(payload)))

    def lines(self) -> list[str]:
        """The events as ``"  123.4 ms  messages x12 (3,456 B) until 130.2 ms"`` lines."""
        text = []
        for at, what, count, size, until in self.events:
            extra = f" x{count} ({size:,} B) until {until} ms" if count > 1 else (f" ({size:,} B)" if size else "")
            text.append(f"{at:9.1f} ms  {what}{extra}")
        return text
