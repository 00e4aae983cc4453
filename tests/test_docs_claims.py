"""The README and docs/architecture.md name only what the code has, read from the code itself: every
``moleseg COMMAND --flag`` against the real parser (and every whole command line of a code block parsed by it),
every flag of a prose span against what the commands, the developer tools and the tests declare, every
``make TARGET VAR=...`` against the Makefile, every ``MOLESEG_*`` variable, every constant given with its value,
every module path and dotted name, the Python version, every pinned version (requirements.txt's), the host name
the Privacy section's proxy serves; the module lists of docs/architecture.md name every module with its line
count, and its module map is what the files give; the README's settings table is the settings module's, its
shipped models' figures are their records in ``models/``, its upload limit is the served configuration's, and it
names every backbone, every file of a run folder and counts every page; where Debian's ``caddy`` is installed,
each Caddyfile of the README is one it accepts.

Each check is a function of the Markdown text that returns its problems, one sentence each, so that a probe
line naming what does not exist shows the check fails. No network, no TensorFlow; about 1 s.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import mimetypes
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from moleseg.cli import build_parser
from moleseg.core import config, settings
from moleseg.tools import doccounts

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")

#: A long option (``--flag``, ``--flag=value``, ``--images/--masks``).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: A command at command position in one code text: at its start (after ``VAR=value`` assignments) or just
#: after a quote (``sh -c "moleseg ..."``, ``--wrap 'moleseg ...'``); group 1 the program, 2 the sub-command
#: or target, 3 the rest up to a closing quote.
COMMAND = re.compile(r"""(?:^\s*(?:[A-Z_]+=\S*\s+)*|(?<=["']))(moleseg|make) ([a-z][\w-]*)([^"']*)""")
#: A name of the package, dotted (``moleseg.engine.runs.RunFiles``), not inside a path or a longer name.
DOTTED = re.compile(r"(?<![\w/.-])moleseg(?:\.[A-Za-z_]\w*)+")
#: A path inside the checkout: a file (with a suffix) or a folder (with its trailing slash).
CHECKOUT_PATH = re.compile(r"(?<![\w/.~$-])((?:moleseg|app_pages|tests|docs|models|studies|\.ci)/[\w./-]*)")
#: Units of the README's "`NAME` = N unit" and "`NAME` (N unit" values, in those of the constants' names.
UNITS = {"px": 1, "megapixels": 1_000_000, "bytes": 1, "s": 1, "minutes": 60, "hours": 3600, "images": 1,
         "epochs": 1, "files": 1, "folders": 1, "GiB": 1024**3, "": 1}


def code_blocks(markdown: str) -> tuple[list[tuple[str, str]], str]:
    """The fenced code blocks of ``markdown`` as ``(language, code)``, and the prose left without them."""
    blocks: list[tuple[str, str]] = []
    prose: list[str] = []
    code: list[str] = []
    fence = None
    for line in markdown.splitlines(keepends=True):
        opening = re.match(r"\s*```(\w*)\s*$", line)
        if fence is None and opening:
            fence, code = opening[1], []
        elif fence is not None and re.match(r"\s*```\s*$", line):
            blocks.append((fence, "".join(code)))
            fence = None
        elif fence is not None:
            code.append(line)
        else:
            prose.append(line)
    return blocks, "".join(prose)


def code_texts(markdown: str, spans: bool = True) -> list[str]:
    """The code of ``markdown``, one text per code block line (``\\``-continued lines joined, a ``#`` comment
    cut) and, with ``spans``, per inline code span (its line breaks made spaces)."""
    blocks, prose = code_blocks(markdown)
    texts = [re.split(r"\s#", line, maxsplit=1)[0]
             for _, code in blocks for line in re.sub(r"\\\n\s*", " ", code).splitlines()]
    if spans:
        texts += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    return texts


def block_lines(markdown: str) -> list[str]:
    """The code block lines of ``markdown`` (joined and cut as in :func:`code_texts`)."""
    return code_texts(markdown, spans=False)


def commands(markdown: str, program: str) -> list[tuple[str, str, str]]:
    """``(text, name, rest)`` of each ``program name ...`` at command position in the code of ``markdown``."""
    return [(text, match[2], match[3]) for text in code_texts(markdown) for match in COMMAND.finditer(text)
            if match[1] == program]


@functools.cache
def parsed(*argv: str) -> tuple[int, str]:
    """The exit status and the output of ``moleseg ARGV`` parsed (nothing runs: a parse ends in ``SystemExit``
    only with ``--help`` or an error; 0 when it parsed)."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            build_parser().parse_args(list(argv))
        except SystemExit as stop:
            return int(stop.code or 0), output.getvalue()
    return 0, output.getvalue()


@functools.cache
def command_flags(name: str) -> frozenset[str] | None:
    """The long options of ``moleseg NAME`` as its ``--help`` lists them (aliases included); None when there is
    no such command."""
    status, text = parsed(name, "--help")
    if status != 0:
        return None
    lines = [line.strip().split("  ")[0] for line in text.splitlines() if line.startswith("  -")]
    return frozenset(flag for line in lines for flag in FLAG.findall(line))


@functools.cache
def command_names() -> tuple[str, ...]:
    """The commands ``moleseg --help`` lists."""
    return tuple(re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", parsed("--help")[1], flags=re.M))


@functools.cache
def declared_flags() -> frozenset[str]:
    """Every long option the project has: its commands', its developer tools' and its test suite's (the
    ``add_argument`` and ``addoption`` literals), and those the Makefile passes (pytest-xdist's, pip's)."""
    flags = {flag for name in command_names() for flag in command_flags(name) or ()}
    for path in [*(ROOT / "moleseg").rglob("*.py"), ROOT / "tests" / "conftest.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("add_argument", "addoption"):
                flags |= {argument.value for argument in node.args
                          if isinstance(argument, ast.Constant) and str(argument.value).startswith("--")}
    return frozenset(flags | set(FLAG.findall((ROOT / "Makefile").read_text(encoding="utf-8"))))


def bare_flag_problems(markdown: str) -> list[str]:
    """Each flag of a prose code span that starts with one (``--records``, ``--steps N``) or runs a module of
    the package (``python -m moleseg.tools.shipped --calibrate-only``) that nothing has."""
    spans = [span for span in re.findall(r"`([^`]+)`", code_blocks(markdown)[1])
             if re.match(r"--|python3? -m\s+moleseg\.", span)]
    return [f"`{span}`: no command, developer tool or test option has {flag}"
            for span in spans for flag in FLAG.findall(span) if flag not in declared_flags()]


def command_problems(markdown: str) -> list[str]:
    """Each ``moleseg COMMAND`` that is no command and each flag it is given that it does not have."""
    problems = []
    for text, name, rest in commands(markdown, "moleseg"):
        flags = command_flags(name)
        if flags is None:
            problems.append(f"`{text}`: moleseg has no command {name}")
        problems += [f"`{text}`: moleseg {name} has no {flag}" for flag in FLAG.findall(rest)
                     if flags is not None and flag not in flags]
    return problems


def command_line_problems(markdown: str) -> list[str]:
    """Each whole ``moleseg`` command line of a code block (no ``...`` or ``$`` in it) that the parser refuses,
    with its message (a value out of its choices, a required option missing)."""
    problems = []
    for text in block_lines(markdown):
        line = text.strip()
        if line.startswith("moleseg ") and "..." not in line and "$" not in line:
            status, output = parsed(*shlex.split(line)[1:])
            if status != 0:
                problems.append(f"`{line}`: {output.strip().splitlines()[-1]}")
    return problems


def makefile_targets_and_variables() -> tuple[set[str], set[str]]:
    """The Makefile's rule targets and the variables it sets or reads."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?![=:])", text, flags=re.M))
    variables = set(re.findall(r"^([A-Z_]+)\s*[?:]?=", text, flags=re.M)) | set(re.findall(r"\$\(([A-Z_]+)\)", text))
    return targets, variables


def make_problems(markdown: str) -> list[str]:
    """Each ``make TARGET`` that the Makefile lacks and each ``VAR=`` after it that it neither sets nor reads."""
    targets, variables = makefile_targets_and_variables()
    problems = []
    for text, target, rest in commands(markdown, "make"):
        if target not in targets:
            problems.append(f"`{text}`: the Makefile has no target {target}")
        problems += [f"`{text}`: the Makefile has no variable {name}" for name in re.findall(r"\b([A-Z_]+)=", rest)
                     if name not in variables]
    return problems


def string_constants(path: Path) -> set[str]:
    """The string literals of a Python file that are not docstrings or other bare expressions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare}


@functools.cache
def variables_read() -> frozenset[str]:
    """``MOLESEG_*`` names the code holds (in string literals), and each setting's ``MOLESEG_<KEY>``."""
    sources = [*(ROOT / "moleseg").rglob("*.py"), ROOT / "app.py"]
    literals = {text for path in sources for text in string_constants(path)}
    found = {name for text in literals for name in re.findall(r"MOLESEG_[A-Z][A-Z0-9_]*", text)}
    return frozenset(found | {settings.ENV_PREFIX + key.upper() for key in settings.KEYS} | {settings.CONFIG_ENV})


def variable_problems(markdown: str) -> list[str]:
    """Each ``MOLESEG_*`` environment variable named that no code reads."""
    named = set(re.findall(r"MOLESEG_[A-Z][A-Z0-9_]*[A-Z0-9]", markdown))
    return [f"{name}: no code reads this variable" for name in sorted(named - variables_read())]


def value_problems(markdown: str) -> list[str]:
    """Each "`NAME` = N unit", "`NAME` (N unit", "`NAME` (N)" or "N unit (`NAME`)" whose constant of
    :mod:`moleseg.core.config` is missing or has another value (a unit :data:`UNITS` lacks is a problem too)."""
    problems = []
    found = re.findall(r"`([A-Z][A-Z0-9_]+)`(?: = |\s+\()([\d.,]*\d)(?: ([A-Za-z]+)|(?=\)))", markdown)
    found += [(name, number, unit) for number, unit, name
              in re.findall(r"\b(\d[\d.,]*)\s+([A-Za-z]+)\s+\(`([A-Z][A-Z0-9_]+)`\)", markdown)]
    for name, number, unit in found:
        value = float(number.replace(",", "")) * UNITS.get(unit, float("nan"))
        if getattr(config, name, None) != value:
            problems.append(f"`{name}`: {number} {unit} in the docs, moleseg.core.config.{name} is "
                            f"{getattr(config, name, 'missing')}")
    return problems


def top_level_names(path: Path) -> set[str]:
    """What a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def dotted_problem(dotted: str) -> str | None:
    """Why ``dotted`` (``moleseg.pkg.module[.Name]``) names nothing in the package; None when it names a module,
    or a name a module defines. A file name such as ``moleseg.json`` is not a module name."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:end])
        module = next((path for path in (base.with_suffix(".py"), base / "__init__.py") if path.is_file()), None)
        if module is not None:
            rest = parts[end:]
            if not rest or rest[0] in top_level_names(module):
                return None
            if len(parts) == 2 and mimetypes.guess_type(f"file.{parts[1]}")[0]:
                return None
            return f"{dotted}: {module.relative_to(ROOT)} defines no {rest[0]}"
    return f"{dotted}: no such module"


def path_problems(markdown: str) -> list[str]:
    """Each dotted package name, and each checkout path (a file with a suffix, or a folder with its ``/``), that
    does not exist. Placeholders (``NAME``, ``<name>``, ``*``) are not paths."""
    problems = [problem for dotted in sorted(set(DOTTED.findall(markdown)))
                if (problem := dotted_problem(dotted))]
    for path in sorted(set(CHECKOUT_PATH.findall(markdown))):
        path = path.rstrip(".")
        placeholder = re.search(r"[A-Z]{2,}|[<*]", path)
        if not placeholder and (path.endswith("/") or Path(path).suffix) and not (ROOT / path).exists():
            problems.append(f"{path}: no such file or folder")
    return problems


def module_lists(markdown: str) -> dict[str, list[str]]:
    """The modules listed under each ``### `FOLDER` ...`` heading of docs/architecture.md, as checkout paths
    (:func:`moleseg.tools.doccounts.module_entries`: an entry ``- `name` (lines): ...`` is ``FOLDER/name.py``,
    one ending in ``.py`` is its own path)."""
    return {folder: [path for path, _ in entries] for folder, entries in doccounts.module_entries(markdown).items()}


def module_list_problems(markdown: str) -> list[str]:
    """Each listed module that does not exist, each module of a listed folder that is not listed (its
    ``__init__.py`` may be left out), and each package folder without a list. The list of ``moleseg`` itself
    holds its top-level modules and ``app.py``."""
    lists = module_lists(markdown)
    problems = [f"{path}: listed in docs/architecture.md, no such module"
                for paths in lists.values() for path in paths if not (ROOT / path).is_file()]
    for folder, paths in lists.items():
        present = {str(path.relative_to(ROOT)) for path in (ROOT / folder).glob("*.py")}
        if folder == "moleseg":
            present.add("app.py")
        else:
            present -= {f"{folder}/__init__.py"}
        problems += [f"{path}: missing from docs/architecture.md's list of {folder}"
                     for path in sorted(present - set(paths))]
    packages = {str(path.parent.relative_to(ROOT)) for path in (ROOT / "moleseg").glob("*/__init__.py")}
    problems += [f"{folder}: docs/architecture.md has no list of its modules"
                 for folder in sorted((packages | {"app_pages", "moleseg"}) - set(lists))]
    return problems


def test_every_moleseg_command_and_flag_the_docs_name_exists() -> None:
    uses = commands(README, "moleseg")
    assert len(uses) >= 30 and {name for _, name, _ in uses} >= {"train", "predict", "evaluate", "serve", "adopt"}
    assert command_problems(README) == []
    assert command_problems(ARCHITECTURE) == []
    assert len(command_names()) >= 12 and {"--records", "--steps", "--calibrate-only"} <= declared_flags()
    assert bare_flag_problems(README) == []
    assert bare_flag_problems(ARCHITECTURE) == []
    spans = "with `--ownerless`, `--no-such-option 3` or `python -m moleseg.tools.shipped --all`"
    assert bare_flag_problems(spans) == [
        "`--no-such-option 3`: no command, developer tool or test option has --no-such-option",
        "`python -m moleseg.tools.shipped --all`: no command, developer tool or test option has --all"]
    probe = "`moleseg predict --out r/ --no-such-flag x.png` and `moleseg frobnicate --out r/`\n"
    assert command_problems(probe) == ["`moleseg predict --out r/ --no-such-flag x.png`: moleseg predict has no "
                                       "--no-such-flag", "`moleseg frobnicate --out r/`: moleseg has no command "
                                                         "frobnicate"]


def test_the_readme_command_lines_parse() -> None:
    lines = [line for line in block_lines(README) if line.strip().startswith("moleseg ")]
    assert len(lines) >= 12
    assert command_line_problems(README) == []
    probe = "```bash\nmoleseg train --out runs/r --solver sgd\n```\n"
    assert len(problems := command_line_problems(probe)) == 1 and "invalid choice: 'sgd'" in problems[0]


def test_every_make_target_and_variable_the_docs_name_exists() -> None:
    named = {target for _, target, _ in commands(README, "make")}
    assert named >= {"run", "test", "test-fast", "models", "crossval", "gpu-check", "device-wheels"}
    assert make_problems(README) == []
    assert make_problems(ARCHITECTURE) == []
    assert make_problems("`make deploy` and `make test TEST_ARGZ=-x`") == [
        "`make deploy`: the Makefile has no target deploy", "`make test TEST_ARGZ=-x`: the Makefile has no "
                                                           "variable TEST_ARGZ"]


def test_every_environment_variable_and_constant_the_readme_names_is_the_codes() -> None:
    assert {"MOLESEG_RUNTIME", "MOLESEG_TMPDIR", "MOLESEG_DATABASE_URL", "MOLESEG_DATA_ROOTS"} <= variables_read()
    assert variable_problems(README) == []
    assert variable_problems("MOLESEG_NO_SUCH_SETTING=1") == ["MOLESEG_NO_SUCH_SETTING: no code reads this variable"]
    assert len(re.findall(r"`[A-Z_]+`(?: = |\s+\()\d", README)) >= 5
    assert value_problems(README) == []
    assert value_problems("`MIN_IMAGE_SIDE_PX` = 16 px") == ["`MIN_IMAGE_SIDE_PX`: 16 px in the docs, "
                                                             "moleseg.core.config.MIN_IMAGE_SIDE_PX is 32"]
    assert len(value_problems(README.replace("`MEDIA_OWNERS` (500)", "`MEDIA_OWNERS` (5,000)")
                              .replace("(2 GiB)", "(3 GiB)").replace("than 12\nhours", "than 24\nhours"))) == 3


def test_every_module_path_and_dotted_name_the_docs_name_exists() -> None:
    assert len(set(DOTTED.findall(ARCHITECTURE))) > 30
    assert path_problems(README) == []
    assert path_problems(ARCHITECTURE) == []
    probe = "`moleseg/engine/nothing.py`, `moleseg.engine.runs.NoFiles` and `moleseg.json` in `app_pages/NAME.py`"
    assert path_problems(probe) == ["moleseg.engine.runs.NoFiles: moleseg/engine/runs.py defines no NoFiles",
                                    "moleseg/engine/nothing.py: no such file or folder"]


def test_the_architecture_lists_every_module_of_every_layer() -> None:
    lists = module_lists(ARCHITECTURE)
    assert {"moleseg/cli", "moleseg/core", "moleseg/engine", "moleseg/network", "moleseg/app", "moleseg/tools",
            "app_pages", "moleseg"} <= set(lists)
    assert module_list_problems(ARCHITECTURE) == []
    probe = ARCHITECTURE.replace("- `words` (", "- `wordz` (")
    assert module_list_problems(probe) == ["moleseg/core/wordz.py: listed in docs/architecture.md, no such module",
                                           "moleseg/core/words.py: missing from docs/architecture.md's list of "
                                           "moleseg/core"]


def test_the_architecture_s_line_counts_are_the_files():
    """``python -m moleseg.tools.doccounts`` rewrites them."""
    assert sum(map(len, doccounts.module_entries(ARCHITECTURE).values())) > 150
    assert [row[0] for row in doccounts.ROW.findall(ARCHITECTURE)] == [
        "moleseg", "moleseg/cli", "moleseg/core", "moleseg/engine", "moleseg/network", "moleseg/app", "moleseg/tools",
        "app_pages", "app.py"]
    assert doccounts.problems(ARCHITECTURE) == []
    words = doccounts.line_count(ROOT / "moleseg" / "core" / "words.py")
    largest = re.search(r"the largest are\s+`([^`]+)`", ARCHITECTURE)[1]
    probe = (ARCHITECTURE.replace(f"- `words` ({words}):", f"- `words` ({words + 1}):")
             .replace("| `app_pages` | 7 |", "| `app_pages` | 8 |").replace(f"`{largest}` (", f"`{largest}x` (")
             .replace("| `app.py` | 1 |", "| `app.py` | 2 |"))
    problems = doccounts.problems(probe)
    assert len(problems) == 4
    assert problems[0] == f"moleseg/core/words.py: {words + 1} lines in docs/architecture.md, {words} in the file"
    assert problems[1].startswith("module map row app_pages: 8 files") and problems[2].startswith("module map row "
                                                                                                   "app.py: 2 files")
    assert "largest modules" in problems[3]
    assert doccounts.problems(doccounts.rewritten(probe)) == [] and doccounts.rewritten(ARCHITECTURE) == ARCHITECTURE
    said: list[str] = []
    assert doccounts.main(["--check"], say=said.append) == 0 and said == []


def test_the_python_version_is_one_fact_and_the_first_screen_has_the_two_commands() -> None:
    first_screen = README.split("\n## ", 1)[0]
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert re.findall(r"Python (\d+\.\d+)\+", first_screen) == [floor.removeprefix(">=")]
    assert [text.split()[:2] for text in block_lines(first_screen)] == [["make", "run"], ["make", "test"]]
    if shutil.which("make"):  # the Makefile's check of the interpreter reads the same floor
        printed = subprocess.run(["make", "-s", "--no-print-directory", "--eval", "print-floor: ; @echo $(MIN_PYTHON)",
                                  "print-floor"], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert printed.stdout.strip() == floor.removeprefix(">=")


@pytest.mark.skipif(shutil.which("caddy") is None, reason="Debian's caddy is not installed")
def test_caddy_accepts_every_caddyfile_of_the_readme(tmp_path) -> None:
    caddyfiles = [code for language, code in code_blocks(README)[0] if not language and "reverse_proxy" in code]
    assert len(caddyfiles) == 3
    for number, caddyfile in enumerate(caddyfiles):
        path = tmp_path / f"Caddyfile{number}"
        path.write_text(caddyfile, encoding="utf-8")
        adapted = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(path)],
                                 capture_output=True, text=True, timeout=30)
        assert adapted.returncode == 0, f"{caddyfile.splitlines()[0]} ...: {adapted.stderr.strip()[-300:]}"


def test_the_privacy_sections_proxy_reaches_the_app_with_the_settings_it_gives() -> None:
    """A proxy passes the browser's host name on, and the app refuses one it was not given: the name each
    proxy of "Privacy and exposing the app" serves is allowed by the variables that section starts it with."""
    section = README.split("\n## Privacy and exposing the app\n", 1)[1].split("\n### ", 1)[0]
    environ = dict(pair for text in code_texts(section) for pair in re.findall(r"\b(MOLESEG_[A-Z_]+)=(\S+)", text))
    sites = re.findall(r"^(\S+\.\S+) \{$|server_name (\S+);", section, flags=re.M)
    assert environ and len(sites) == 2
    allowed = settings.read_settings(environ)
    assert allowed.mode == "personal" and allowed.address == "127.0.0.1"
    for site in {name for pair in sites for name in pair if name}:
        assert allowed.host_allowed(site) and not settings.read_settings({}).host_allowed(site), site


def test_the_shipped_models_figures_are_their_records() -> None:
    """The README's table of shipped models and its cross-validation sentence quote ``models/<name>.json``."""
    rows = re.findall(r"^\| `models/(\w+)\.keras` \|.*: ([\d.]+) \(([\d.]+)\) \| \[", README, flags=re.M)
    assert {name for name, _, _ in rows} == {path.stem for path in (ROOT / "models").glob("*.keras")}
    records = {name: json.loads((ROOT / "models" / f"{name}.json").read_text(encoding="utf-8")) for name, _, _ in rows}
    for name, fm, baseline in rows:
        (evaluation,) = records[name]["evaluation"].values()
        assert (fm, baseline) == (f"{evaluation['model']['fm']['mean']:.3f}",
                                  f"{evaluation['classical']['fm']['mean']:.3f}"), name
    crossval = records["dermoscopy"]["crossval"]
    sentence = re.search(r"gives\s+([\d.]+) out of fold \(min ([\d.]+); the classical baseline ([\d.]+)", README)
    assert sentence and sentence.groups() == (f"{crossval['fm']['mean']:.3f}", f"{crossval['fm']['min']:.3f}",
                                              f"{crossval['baseline_fm']['mean']:.3f}")


def test_the_settings_table_is_the_settings_module() -> None:
    """Every key of the README's settings table, and only those, with the defaults and limits of
    :mod:`moleseg.core.settings`."""
    table = {key: (meaning, default) for key, meaning, default
             in re.findall(r"^\| `([a-z_]+)` \| (.*) \| (.*) \|$", README, flags=re.M)}
    assert set(table) == set(settings.KEYS)
    default = settings.ServerSettings()
    assert table["mode"] == (" or ".join(f"`{mode}`" for mode in settings.MODES), f"`{default.mode}`")
    assert table["port"][1] == f"`{settings.DEFAULT_PORT}`"
    assert table["address"][1] == ", ".join(f"`{address}` ({mode})"
                                            for mode, address in settings.DEFAULT_ADDRESS.items())
    assert table["user_quota_gb"][1] == ", ".join(f"`{quota:g}` ({mode})"
                                                  for mode, quota in settings.DEFAULT_USER_QUOTA_GB.items())
    assert f"`user_quota_gb` ({settings.DEFAULT_USER_QUOTA_GB['shared']:g} GB in shared mode)" in README
    assert table["user_headers"][1] == ", ".join(f"`{header}`" for header in settings.DEFAULT_USER_HEADERS)
    assert table["proxy_secret_header"][1] == f"`{settings.DEFAULT_PROXY_SECRET_HEADER}`"
    assert f"({settings.MIN_PROXY_SECRET_LENGTH} characters or more)" in table["proxy_secret"][0]
    assert table["identity"][1].startswith(f"`{default.identity}`")
    assert ", ".join(f"`{source}`" for source in settings.IDENTITY_SOURCES) in table["identity"][0]
    assert "beside " + ", ".join(f"`{host}`" for host in settings.LOOPBACK_HOSTS) in table["allowed_hosts"][0]


def test_the_upload_limit_and_the_hidden_menu_are_the_served_configuration() -> None:
    """The README's upload limit (the app's and its nginx example's) and its hidden developer menu are those of
    ``.streamlit/config.toml``."""
    served = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    megabytes = served["server"]["maxUploadSize"]
    assert re.findall(r"uploads are limited to (\d+) MB", README) == [str(megabytes)]
    assert re.findall(r"client_max_body_size (\d+)m;", README) == [str(megabytes)]
    assert re.findall(r'`client\.toolbarMode = "(\w+)"`', README) == [served["client"]["toolbarMode"]]


def test_the_readme_names_every_backbone_and_counts_every_page() -> None:
    from moleseg.core.backbones import BACKBONES

    network = re.search(r"^2\. \*\*Network\.\*\*(.*?)^3\. ", README, flags=re.M | re.S)[1]
    squeezed = re.sub(r"[\W_]", "", network.lower())
    assert [name for name in BACKBONES if re.sub(r"[\W_]", "", name) not in squeezed] == []
    ui = ast.parse((ROOT / "moleseg" / "app" / "ui.py").read_text(encoding="utf-8"))
    (pages,) = [node.value for node in ui.body if isinstance(node, ast.AnnAssign) and node.target.id == "PAGES"]
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    assert re.findall(r"`make run` opens (\w+) pages", README) == [words[len(pages.elts) - 1]]


def test_the_readme_names_every_file_of_a_run_folder() -> None:
    from moleseg.engine.runs import RunFiles

    names = {value for key, value in vars(RunFiles).items() if key.isupper() and isinstance(value, str)}
    paragraph = re.search(r"^A run folder holds (.*?)\n\n", README, flags=re.M | re.S)[1]
    assert len(names) >= 10 and sorted(names - set(re.findall(r"`([^`]+)`", paragraph))) == []


def pin_problems(text: str) -> list[str]:
    """Each ``name[extras]==version`` of ``text`` whose package ``requirements.txt`` pins at another version, or
    which the Makefile installs (``pip install ... name==version``) at another; a package neither pins is not
    checked."""
    def pins(source: str) -> dict[str, str]:
        return {name.lower(): version for name, version
                in re.findall(r"(?<![\w.-])([A-Za-z0-9][\w.-]*)(?:\[[\w,-]+\])?==(\d[\w.]*)", source)}

    pinned = {**pins((ROOT / "Makefile").read_text(encoding="utf-8")),
              **pins((ROOT / "requirements.txt").read_text(encoding="utf-8"))}
    return [f"{name}=={version}: requirements.txt or the Makefile pins {pinned[name]}"
            for name, version in pins(text).items() if name in pinned and pinned[name] != version]


def test_every_pinned_version_the_docs_give_is_the_pin() -> None:
    named = re.findall(r"==\d", README + (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert len(named) >= 4
    assert pin_problems(README) == [] and pin_problems(ARCHITECTURE) == []
    assert pin_problems((ROOT / "Makefile").read_text(encoding="utf-8")) == []
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    tensorflow = re.search(r"^tensorflow==(\S+)$", requirements, flags=re.M)[1]
    assert pin_problems("`pip install tensorflow[and-cuda]==2.0.0` or `nosuch==1`") == [
        f"tensorflow==2.0.0: requirements.txt or the Makefile pins {tensorflow}"]
