"""Privacy: the served app listens on 127.0.0.1 only, sends no usage statistics, keeps XSRF protection and
hides error details; no image content or file name reaches a log; the README says how to expose the app
safely and that it is not a medical device."""

from __future__ import annotations

import ast
import logging
import os
import stat
import tomllib
from pathlib import Path

from app_helpers import app_test
from synthetic import mole_image, png_bytes
from moleseg.app.ui import PAGE_FILES
from moleseg.core.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
#: Calls that write a log record or to the server's terminal.
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def test_the_server_settings_keep_the_app_private():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert settings["server"]["address"] == "127.0.0.1"
    assert settings["server"]["enableXsrfProtection"] is True
    assert settings["browser"]["gatherUsageStats"] is False
    assert settings["client"]["showErrorDetails"] == "none"


def test_an_error_a_forged_widget_value_raises_reaches_the_browser_without_its_traceback(app_folders):
    """A browser's own message may give a widget a value of another type (a text for a number input), which
    raises inside Streamlit as the page draws the widget. The legacy ``showErrorDetails = false`` is Streamlit's
    "stacktrace": the browser was sent the exception's type and traceback (paths and source lines)."""
    from app_helpers import app_test, forged_run

    at = app_test(PAGE_FILES["analyse"])
    forged_run(at, "analyse_pixel_size", string_value="x")
    (error,) = at.exception
    assert list(error.stack_trace) == [] and error.proto.type == ""
    assert error.message.startswith("This app has encountered an error.")


def test_moleseg_serve_started_from_any_folder_runs_streamlit_with_those_settings(monkeypatch, tmp_path):
    """Streamlit reads ``.streamlit/config.toml`` from its working folder, and ``moleseg serve`` passes only the
    address, port, hosts, XSRF and CORS on its command line: started from another folder (an installed
    ``moleseg``, a service file), it still runs Streamlit where the settings above are, with no usage statistics,
    no error details, the developer menu hidden and the upload limit."""
    from moleseg.cli import main
    from moleseg.core.settings import load_settings

    started = {}

    def execv(program: str, args: list[str]) -> None:  # where Streamlit would start, instead of starting it
        started["folder"], started["args"] = Path.cwd(), args
        raise SystemExit(0)

    for name in [name for name in os.environ if name.startswith("MOLESEG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.chdir(tmp_path)
    load_settings.cache_clear()
    try:
        try:
            main(["serve", "--quiet"])
        except SystemExit as stop:
            assert stop.code == 0
    finally:
        load_settings.cache_clear()
    assert started["folder"] != tmp_path and "--server.address=127.0.0.1" in started["args"]
    served = tomllib.loads((started["folder"] / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert served == tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert (served["browser"]["gatherUsageStats"], served["client"]["showErrorDetails"],
            served["client"]["toolbarMode"]) == (False, "none", "minimal")
    assert served["server"]["maxUploadSize"] > 0  # its value is the README's (tests/test_docs_claims.py)


def test_streamlit_s_agent_api_which_the_media_gate_does_not_watch_stays_off():
    """The README: Streamlit's agent API reads the files by a way the media gate does not watch, off unless the
    operator turns it on. Off by Streamlit's default (an upgrade that turns it on fails here), not turned on by
    the served configuration, nor by what ``moleseg serve`` passes."""
    from streamlit import config as streamlit_config
    from moleseg.core.settings import read_settings

    option = "server.enableAgentApi"
    assert streamlit_config.get_config_options()[option].default_val is False
    served = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert served["server"].get(option.split(".")[1], False) is False
    flags = read_settings({}).streamlit_flags()
    assert len(flags) > 3 and not [flag for flag in flags if flag.startswith(f"--{option}")]


def _log_calls(path: Path) -> list[str]:
    """``file:line call`` of every logging call and ``print`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id == "print":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} print")
        elif (isinstance(function, ast.Attribute) and function.attr in LOG_METHODS
              and isinstance(function.value, (ast.Name, ast.Call))
              and ast.unparse(function.value).split("(")[0].split(".")[-1] in ("logging", "logger", "log",
                                                                                "getLogger", "_LOGGER")):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(function)}")
    return found


def _printed_names(path: Path) -> set[str]:
    """The names whose values the ``print`` calls of ``path`` put in their text, and ``<call>`` for a print whose
    text is not a literal or an f-string of names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            for argument in node.args:
                if isinstance(argument, ast.Constant):
                    continue
                if not isinstance(argument, ast.JoinedStr):
                    found.add("<call>")
                    continue
                for value in argument.values:
                    if isinstance(value, ast.FormattedValue):
                        names = [n.id for n in ast.walk(value.value) if isinstance(n, ast.Name)]
                        found.update(names or ["<call>"])
    return found


def test_the_server_code_writes_no_log_lines():
    """The code the server runs (app.py, the pages, moleseg.app and moleseg.engine) logs nothing and prints
    nothing: file names and results appear in the user's own browser only. The exceptions are the lines for the
    operator's console of :data:`OPERATOR_LINES` (the warm-up's counts and times, a database left unerased), which
    carry no file name and no result."""
    files = [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py")),
             *sorted((ROOT / "moleseg" / "app").glob("*.py")), *sorted((ROOT / "moleseg" / "engine").glob("*.py"))]
    assert len(files) > 10
    assert [call for path in files if path not in OPERATOR_LINES for call in _log_calls(path)] == []
    for path, names in OPERATOR_LINES.items():
        assert {call.split()[-1] for call in _log_calls(path)} == {"print"}
        assert _printed_names(path) <= names, path


def test_the_server_process_makes_its_files_for_its_own_account_only(monkeypatch, tmp_path):
    """Whatever the server and the processes it starts create (records, users' folders and runs, caches, the
    training lock's sidecar naming a user's run, session folders) is the server's account's
    only, under the operator's usual umask 022 too: no other local account reads a patient's picture."""
    import streamlit.web.cli
    from moleseg.app import server

    made = {}

    def streamlit_main(args: list[str], prog_name: str) -> None:  # what Streamlit's server would create
        made["file"] = stat.S_IMODE(atomic_write(tmp_path / "visit.json", b"{}").stat().st_mode)
        (tmp_path / "users" / "alice").mkdir(parents=True)
        made["folder"] = stat.S_IMODE((tmp_path / "users").stat().st_mode)

    monkeypatch.setattr(streamlit.web.cli, "main", streamlit_main)
    before = os.umask(0o022)
    try:
        server.main(["version"])
    finally:
        os.umask(before)
    assert made == {"file": 0o600, "folder": 0o700}


def test_a_bare_streamlit_run_of_serve_app_runs_under_the_server_s_umask(app_folders):
    """``streamlit run serve_app.py`` without ``moleseg serve`` (an operator's own service file), started under the
    usual umask 022: the server process's mask is SERVER_UMASK all the same (its /proc status)."""
    from app_helpers import streamlit_server
    from moleseg.app.server import SERVER_UMASK

    before = os.umask(0o022)  # the server inherits it
    try:
        with streamlit_server(dict(os.environ), "streamlit-umask") as (_, process):
            status = Path(f"/proc/{process.pid}/status").read_text(encoding="utf-8")
    finally:
        os.umask(before)
    umask = next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:"))
    assert int(umask, 8) == SERVER_UMASK


#: Server files allowed to print for the operator, and the only names whose values their lines may carry: the
#: warm-up's counts and times, and the PostgreSQL records' one line when a deleted visit's text could not be erased
#: at once (``self.name``, the database's URL with its password masked, and the driver's reason).
OPERATOR_LINES = {ROOT / "moleseg" / "app" / "server.py": {"LISTEN_TIMEOUT_S", "WARM_UP_WORDS", "len", "loaded",
                                                           "time", "started"},
                  ROOT / "moleseg" / "engine" / "recordspg.py": {"self", "reason"}}


def test_analysing_an_image_puts_neither_its_name_nor_its_pixels_in_a_log(app_folders, caplog, capfd):
    name = "Doe_Jane_1970-01-01.png"
    data = png_bytes(mole_image()[0])
    caplog.set_level(logging.DEBUG)
    at = app_test(PAGE_FILES["analyse"])
    at.file_uploader(key="analyse_upload_files").set_value((name, data, "image/png")).run()
    assert not at.exception and [outcome.name for outcome in at.session_state["analyse_outcomes"]] == [name]
    captured = capfd.readouterr()
    for text in (caplog.text, captured.out, captured.err):
        assert "Doe_Jane" not in text
        assert data[:64].hex() not in text.replace(" ", "")


def test_the_readme_says_how_to_expose_the_app_and_that_it_is_not_a_medical_device():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Privacy and exposing the app", 1)
    assert len(section) == 2, "the README has no privacy section"
    text = section[1].split("\n## ", 1)[0]
    for needed in ("127.0.0.1", "reverse proxy", "TLS", "basic_auth", "oauth2-proxy", "not a medical device",
                   "gatherUsageStats", "XSRF"):
        assert needed in text, needed
