"""Shared test fixtures. Synthetic images and datasets are in tests/synthetic.py, the AppTest helpers in
tests/app_helpers.py; append new fixtures below and keep each section small."""

from __future__ import annotations

import collections
import gc
import os
import sys

# Parallel runs (pytest-xdist: ``-n 2`` in the Makefile): each worker process, and every process it starts,
# runs TensorFlow's and the BLAS's kernels on one thread, so that two workers share two cores instead of
# fighting over them. Set before anything imports TensorFlow or numpy's BLAS.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import time  # noqa: E402
from pathlib import Path
from typing import Callable, Iterator

import pytest
from hypothesis import settings

from moleseg.network.compiled import CACHE_ENV
from moleseg.tools import SHARED_DATA_DIR

# Tests load many small throw-away models: none of them is written to the per-machine inference cache
# (tests/test_inference_cache.py turns it on for itself, in a temporary folder).
os.environ[CACHE_ENV] = "0"

# Property tests draw the same examples on every run (a failure found once is found again, and CI is not
# flaky); MOLESEG_FUZZ_EXAMPLES raises the example counts of tests/test_fuzz.py for long runs.
settings.register_profile("moleseg", derandomize=True, print_blob=True)
settings.load_profile("moleseg")

# --------------------------------------------------------------------------------------------------
# Real data (:data:`moleseg.tools.SHARED_DATA_DIR`)

SHARED_DATA: Path = SHARED_DATA_DIR


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data (it may be absent: see ``require_shared``)."""
    return SHARED_DATA


@pytest.fixture
def require_shared(shared_data: Path) -> Callable[..., Path]:
    """``require_shared(subpath="")``: the path ``shared_data / subpath``, or skip the test when it does not
    exist."""

    def require(subpath: str | os.PathLike[str] = "") -> Path:
        path = shared_data / subpath
        if not path.exists():
            pytest.skip(f"shared data not found at {path}: real-data tests skipped")
        return path

    return require


# --------------------------------------------------------------------------------------------------
# The app's folders


@pytest.fixture
def app_folders(monkeypatch, tmp_path: Path, tmp_path_factory) -> Iterator[dict[str, Path]]:
    """Point the app at empty models/runs folders and a private temporary folder (no shipped model: the app
    falls back to the classical baseline, whatever is installed in the project), and offer ``tmp_path`` as the
    server's one data root; the folders by name. The session folders (``tmp``) and the caches lie outside the data
    root, as a shared server requires."""
    from moleseg.core.settings import load_settings

    private = tmp_path_factory.mktemp("app-private")
    folders = {name: tmp_path / name for name in ("models", "runs")}
    folders.update({name: private / name for name in ("tmp", "cache")})
    for folder in folders.values():
        folder.mkdir(exist_ok=True)
    monkeypatch.setenv("MOLESEG_MODELS_DIR", str(folders["models"]))
    monkeypatch.setenv("MOLESEG_RUNS_DIR", str(folders["runs"]))
    monkeypatch.setenv("MOLESEG_TMPDIR", str(folders["tmp"]))
    monkeypatch.setenv("MOLESEG_CACHE", str(folders["cache"]))
    monkeypatch.setenv("MOLESEG_DATA_ROOTS", str(tmp_path))
    load_settings.cache_clear()
    yield folders
    monkeypatch.undo()
    load_settings.cache_clear()


# --------------------------------------------------------------------------------------------------
# Synthetic dermoscopy scenes (textured skin with a lesion), for registration and comparison tests

@pytest.fixture
def lesion_scene():
    """Factory of synthetic lesion images: ``lesion_scene(radius_px=, angle_deg=, shift_px=, seed=)``."""
    from synthetic import lesion_scene as make

    return make


# --------------------------------------------------------------------------------------------------
# The test process's own main module, whatever a test ran in it

@pytest.fixture(autouse=True)
def main_module_kept() -> Iterator[None]:
    """Put the process's ``__main__`` back after each test. Streamlit's script runner (``AppTest`` runs it in the
    test process) installs each page it runs as ``sys.modules["__main__"]`` and leaves it there; a later
    ``multiprocessing`` "spawn" child would run that page's file as its own main module (a ``from_function``
    page's file calls names only the runner defines), die, and leave its pool waiting until pytest-timeout."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


# --------------------------------------------------------------------------------------------------
# Saved records: every test gets its own data folder, never the user's

@pytest.fixture(autouse=True)
def records_data_dir(tmp_path_factory, monkeypatch) -> Path:
    """A fresh ``MOLESEG_DATA_DIR`` for each test (the records database and files go there), and never the
    PostgreSQL database or files folder that the environment of whoever runs the tests may name."""
    from moleseg.core.config import DATA_DIR_ENV
    from moleseg.core.settings import ENV_PREFIX, load_settings

    folder = tmp_path_factory.mktemp("moleseg-data")
    monkeypatch.setenv(DATA_DIR_ENV, str(folder))
    elsewhere = [ENV_PREFIX + key.upper() for key in ("database_url", "records_files_dir")]
    if any(name in os.environ for name in elsewhere):
        for name in elsewhere:
            monkeypatch.delenv(name, raising=False)
        load_settings.cache_clear()
    return folder


# --------------------------------------------------------------------------------------------------
# A real chromium for the tests that drive the served app (marked ``browser``)

@pytest.fixture(scope="module")
def chromium():
    """A headless chromium (playwright), launched once per test module; the test is skipped when playwright
    or chromium is missing."""
    import shutil

    from app_helpers import CHROMIUM_ARGS

    playwright = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("chromium is not installed")
    with playwright.sync_playwright() as driver:
        instance = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def browser(chromium):
    """The module's chromium for one test: its pages (each in a context of its own, sharing no cookies or
    storage) are closed when the test ends."""
    yield chromium
    for context in chromium.contexts:
        context.close()


# --------------------------------------------------------------------------------------------------
# The time budget: pytest-timeout fails a test after its limit (``timeout`` in pyproject.toml, or the
# test's @pytest.mark.timeout(seconds)); a test that waits for a process waits until shortly before then

#: Seconds kept back from a test's limit for its own failure message and the cleanup of its processes.
TIMEOUT_MARGIN_S = 20.0


def timeout_of(request: pytest.FixtureRequest) -> float:
    """The limit of the running test in seconds (pytest-timeout's: the marker, ``--timeout`` or the ini)."""
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(request.config.getoption("timeout", None) or request.config.getini("timeout") or 0)


@pytest.fixture
def time_left(request: pytest.FixtureRequest) -> Callable[[], float]:
    """``time_left()``: seconds a wait inside the test may still take, that is until its pytest-timeout less
    :data:`TIMEOUT_MARGIN_S` (at least 1 s; an hour when no limit is set)."""
    limit = timeout_of(request)
    end = time.monotonic() + (limit - TIMEOUT_MARGIN_S if limit > 0 else 3600.0)
    return lambda: max(1.0, end - time.monotonic())


#: A test whose call takes longer than this (seconds) without the ``slow`` or ``browser`` marker is named at
#: the end of the run, to be marked or made faster (``make test-fast`` stays within its 2 minutes).
UNMARKED_SLOW_S = 15.0
_unmarked_slow: list[tuple[float, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations_this_run[report.nodeid] += report.duration
    if (report.when == "call" and report.duration > UNMARKED_SLOW_S
            and "slow" not in report.keywords and "browser" not in report.keywords):
        _unmarked_slow.append((report.duration, report.nodeid))


def pytest_terminal_summary(terminalreporter) -> None:
    if _unmarked_slow:
        terminalreporter.section("slower than the fast selection allows, but not marked slow or browser")
        for duration, nodeid in sorted(_unmarked_slow, reverse=True):
            terminalreporter.write_line(f"{duration:.1f} s  {nodeid}")


# --------------------------------------------------------------------------------------------------
# A real PostgreSQL server for the records tests (Debian's ``postgresql``; ``.ci/run`` installs it), started
# once per session in a temporary folder as an unprivileged user, on 127.0.0.1 and a free port

#: Where Debian puts the server's programs (``initdb`` and ``pg_ctl`` are not on its PATH).
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: The password of the tests' database user (password authentication over TCP, as a deployment has).
POSTGRES_PASSWORD = "records-test-password"


def postgres_program(name: str) -> str | None:
    """The path of the PostgreSQL program ``name`` (PATH first, then Debian's folders, newest first)."""
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob(POSTGRES_BIN_GLOB), reverse=True):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL (``postgresql://moleseg:PASSWORD@127.0.0.1:PORT/moleseg``) of a PostgreSQL server of this test
    session; the test is skipped when the server's programs are not installed."""
    import shutil
    import subprocess
    import tempfile

    from app_helpers import free_port

    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin; "
                    ".ci/run installs Debian's postgresql): the PostgreSQL records tests are skipped")
    folder = Path(tempfile.mkdtemp(prefix="moleseg-postgres-"))
    data, socket_dir, password_file = folder / "data", folder / "socket", folder / "password"
    socket_dir.mkdir()
    password_file.write_text(POSTGRES_PASSWORD + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "nobody")
        for path in (socket_dir, password_file):
            shutil.chown(path, "nobody")
        as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    port = free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], cwd=folder, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    run(initdb, "-D", str(data), "-U", "moleseg", "--auth-local=trust", "--auth-host=scram-sha-256",
        f"--pwfile={password_file}", "--no-sync", "-E", "UTF8", "--locale=C")
    options = (f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               f"-c full_page_writes=off -c max_connections=200")
    run(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "-t", "60", "start")
    try:
        run(postgres_program("createdb") or "createdb", "-h", str(socket_dir), "-p", str(port), "-U", "moleseg",
            "moleseg")
        yield f"postgresql://moleseg:{POSTGRES_PASSWORD}@127.0.0.1:{port}/moleseg"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], cwd=folder,
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A URL of the session's PostgreSQL server whose connections see only a fresh, empty schema of this test
    (``search_path``): each test starts from an empty records database."""
    import uuid

    import sqlalchemy

    schema = f"test_{uuid.uuid4().hex}"
    engine = sqlalchemy.create_engine(postgres_server.replace("postgresql://", "postgresql+psycopg://"),
                                      poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine.dispose()
    return f"{postgres_server}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def open_records(request: pytest.FixtureRequest) -> Callable[..., object]:
    """``open_records(folder)``: a :class:`moleseg.engine.records.Records` of the data folder ``folder`` on
    each backend in turn: the SQLite file in it, then a fresh PostgreSQL schema (files in ``folder/files``
    on both). Its ``.backend`` names the backend."""
    from moleseg.engine.records import Records

    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None

    def opened(folder: str | os.PathLike[str]) -> Records:
        return Records(folder, database_url=url)

    opened.backend = request.param  # type: ignore[attr-defined]
    opened.url = url  # type: ignore[attr-defined]
    return opened


# --------------------------------------------------------------------------------------------------
# Garbage collection: what the test modules import while they are collected (TensorFlow and Keras among it,
# several hundred thousand objects) lives until the end; frozen out of the collector's reach, it is not walked
# again by every full collection during the tests (an AppTest of a page takes about a fifth of the CPU time).


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


# --------------------------------------------------------------------------------------------------
# The order of the run: longest processing time first. A parallel run (``--dist loadscope``) hands out whole
# modules (each module's fixtures are made once) in the order of the collection, one more to a worker as it
# nears the end of its own; with the costliest modules first the last ones to end are short, and the workers
# end together. A module's cost is the sum over its selected tests of their seconds in tests/durations.json
# (setup, call and teardown in a whole ``make test`` on 2 cores, written by ``--record-durations``); a test
# that the table does not name is estimated.

#: Each test's seconds in a whole run (``{node id: seconds}``): the order of the next runs.
DURATIONS_FILE = Path(__file__).with_name("durations.json")
#: Estimated seconds of a test that trains, runs a network or drives a browser, absent from the table
#: (about the mean of those outside a whole run's fifteen slowest).
HEAVY_TEST_S = 6.0
#: Estimated seconds of any other test absent from the table (the mean of the fast selection's tests).
LIGHT_TEST_S = 0.16


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-durations", action="store_true",
                     help=f"write each test's seconds in this run into tests/{DURATIONS_FILE.name} (the order "
                          "of the next runs; the tests this run did not reach keep their figure)")


def _heavy(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None or item.get_closest_marker("browser") is not None


def recorded_durations() -> dict[str, float]:
    """The table of :data:`DURATIONS_FILE` (empty when it is absent or unreadable)."""
    import json

    try:
        table = json.loads(DURATIONS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(nodeid): float(seconds) for nodeid, seconds in table.items()} if isinstance(table, dict) else {}


@pytest.hookimpl(trylast=True)  # after ``-m`` and ``-k`` took out what this run leaves aside
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # ``--dist loadscope`` reads a test's module as its node id up to a "::", so a parameter id holding one (an IPv6
    # address) sent that test to another worker, which made its own copy of the module's fixtures: a second server
    # writing the same log (test_host_check, 2026-12-07)
    split = [item.nodeid for item in items if "::" in item.nodeid.partition("[")[2]]
    if split:
        raise pytest.UsageError("a parameter id holds '::', which splits its module between the test workers (give "
                                f"it an id with pytest.param): {', '.join(split)}")
    table = recorded_durations()
    cost: collections.Counter[Path] = collections.Counter()
    for item in items:
        cost[item.path] += table.get(item.nodeid, HEAVY_TEST_S if _heavy(item) else LIGHT_TEST_S)
    items.sort(key=lambda item: -cost[item.path])  # stable: each module keeps its order


_durations_this_run: collections.Counter[str] = collections.Counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not session.config.getoption("record_durations") or hasattr(session.config, "workerinput"):
        return  # each report reaches the controller of a parallel run too, which writes the table
    import json

    from moleseg.core.atomic import atomic_write

    this_run = {nodeid: round(seconds, 2) for nodeid, seconds in _durations_this_run.items()}
    table = {**recorded_durations(), **this_run}
    atomic_write(DURATIONS_FILE, (json.dumps(dict(sorted(table.items())), indent=0) + "\n").encode())


# --------------------------------------------------------------------------------------------------
# Trainings that several tests read: each runs once per test session, across pytest-xdist workers too (the
# first worker to ask runs it under a file lock and leaves its output beside the workers' temporary folders)


def run_once(tmp_path_factory: pytest.TempPathFactory, config: pytest.Config, name: str,
             produce: Callable[[], dict]) -> dict:
    """What ``produce()`` returns (a JSON-able dict), computed once per test session: in a pytest-xdist run the
    first worker computes it and the others read ``NAME.json`` that it left in the run's shared base folder. A
    worker waits for another's at most nine tenths of pytest-timeout's limit (``config``'s ``timeout``), then fails
    saying so; when the computing worker failed (``NAME.error``: its message) or ended without a result (killed:
    ``NAME.started`` alone), the others fail with that, rather than compute it again over what it left."""
    import json

    from filelock import FileLock, Timeout

    from moleseg.core.atomic import atomic_write

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return produce()
    shared = tmp_path_factory.getbasetemp().parent
    saved, failed, started = (shared / f"{name}.{kind}" for kind in ("json", "error", "started"))
    limit_s = 0.9 * float(config.getini("timeout") or 0)
    try:
        with FileLock(f"{saved}.lock", timeout=limit_s if limit_s > 0 else -1):
            if saved.is_file():
                return json.loads(saved.read_text(encoding="utf-8"))
            if failed.is_file():
                pytest.fail(f"{name}: another worker's run of it failed: {failed.read_text(encoding='utf-8')}",
                            pytrace=False)
            if started.is_file():
                pytest.fail(f"{name}: another worker started it and ended without a result (killed?)",
                            pytrace=False)
            started.touch()
            try:
                result = produce()
            except BaseException as error:  # pytest-timeout's failure too
                atomic_write(failed, f"{type(error).__name__}: {error}".encode())
                raise
            atomic_write(saved, json.dumps(result).encode())
            return result
    except Timeout:
        pytest.fail(f"{name}: waited {limit_s:.0f} s for another worker to compute it", pytrace=False)


@pytest.fixture(scope="session")
def without_tensorflow() -> Path:
    """A folder whose ``sitecustomize.py`` makes TensorFlow unimportable in a process that has it first on
    ``PYTHONPATH``: a subprocess then runs as on the GPU machine, which has none (tests/no_tensorflow/)."""
    return Path(__file__).resolve().parent / "no_tensorflow"


@pytest.fixture(scope="session")
def gpu_check_cpu(tmp_path_factory, request, without_tensorflow) -> Callable[[str], dict]:
    """``gpu_check_cpu(backend)``: ``python -m moleseg.tools.gpu_check --cpu --backend BACKEND`` (a few training
    steps of the dermoscopy recipe's network on the CPU), run once per session and backend; its exit status
    (``returncode``), ``stdout`` and ``stderr``. The JAX run cannot import TensorFlow (:func:`without_tensorflow`),
    as on the GPU machine. tests/test_gpu_check.py checks its report; tests/test_feed.py reads the JAX run as its
    training under Keras on JAX fed by the PairFeed."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    results: dict[str, dict] = {}

    def check(backend: str) -> dict:
        env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        env.pop("KERAS_BACKEND", None)  # --backend sets it
        if backend == "jax":
            env["PYTHONPATH"] = f"{without_tensorflow}{os.pathsep}{root}"
            # XLA compiles about a hundred programs here (each weight shape's initialiser, the training step):
            # without LLVM's optimisation passes a quarter less CPU (64 -> 49 CPU-s), and with XLA's plain LLVM
            # emitters for fusions instead of its MLIR fusion emitters a third less again (33 -> 21 CPU-s). What
            # the tests check (it trains, the loss falls, the pipeline keeps up) does not hang on the code's speed.
            env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0 "
                                "--xla_cpu_use_fusion_emitters=false").strip()

        def produce() -> dict:
            done = subprocess.run([sys.executable, "-m", "moleseg.tools.gpu_check", "--cpu", "--backend", backend],
                                  capture_output=True, text=True, env=env, timeout=240)
            return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

        if backend not in results:
            results[backend] = run_once(tmp_path_factory, request.config, f"gpu-check-cpu-{backend}", produce)
        return results[backend]

    return check


@pytest.fixture(scope="session")
def seed_moles_run(tmp_path_factory, request) -> Path:
    """The run folder of a short training on the real seed moles (``moles/seed/train``, 70 pairs: MobileNetV2
    from ImageNet at 64 px, two epochs of 7 steps of 8 images, 20 % validation, seed 3), trained once per
    session: tests/test_train.py checks that its loss falls, tests/test_finetune.py fine-tunes its model. The
    test is skipped when the real data is absent."""
    seed = SHARED_DATA / "moles" / "seed" / "train"
    if not seed.is_dir():
        pytest.skip(f"shared data not found at {seed}: real-data tests skipped")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "seed-moles-run"
    else:
        folder = tmp_path_factory.mktemp("seed-moles-run")

    def produce() -> dict:
        from moleseg.core import options
        from moleseg.core.trainconfig import TrainConfig
        from moleseg.network.train import train

        config = options.merged({"images": [str(seed / "images")], "masks": [str(seed / "masks")], "seed": 3,
                                 "model": {"input_size": 64, "backbone": "mobilenetv2"}, "weights": "imagenet",
                                 "epochs": 2, "batch_size": 8, "validation_split": 0.2, "calibrate": False,
                                 "train_fm_images": 0, "augment": ["reflection"]})
        train(TrainConfig.from_dict(config), folder / "run")
        return {"run": str(folder / "run")}

    return Path(run_once(tmp_path_factory, request.config, "seed-moles-run", produce)["run"])
