"""The layers of docs/architecture.md are enforced: import-linter's contracts in pyproject.toml, and no private
name imported across modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert executable, "import-linter is not installed (it is in requirements.txt)"
    result = subprocess.run([executable, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def private_imports(path: Path) -> list[str]:
    """``line module._name`` for every ``from moleseg... import _name`` in ``path`` (dunders such as
    ``__version__`` are public)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "moleseg":
            found += [f"{node.lineno} {node.module}.{alias.name}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_module_imports_a_private_name_of_another(tmp_path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from moleseg import __version__\nfrom moleseg.core.options import _number, option\n")
    assert private_imports(probe) == ["2 moleseg.core.options._number"]
    sources = sorted((ROOT / "moleseg").rglob("*.py")) + sorted((ROOT / "app_pages").glob("*.py")) + [ROOT / "app.py"]
    found = {str(path.relative_to(ROOT)): private_imports(path) for path in sources}
    assert len(found) > 70 and {name: lines for name, lines in found.items() if lines} == {}
