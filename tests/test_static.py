"""ruff and mypy (strict) on the package, as part of the one test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)


def test_ruff_clean():
    res = _run("ruff", "check", "edge_app", "scripts", "tests")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_clean():
    res = _run("mypy", "edge_app")
    assert res.returncode == 0, res.stdout + res.stderr


def test_vision_imports_nothing_else_of_ours():
    # vision/ is pure compute: it may import itself, never the rest of edge_app.
    for path in (ROOT / "edge_app" / "vision").glob("*.py"):
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import edge_app", "from edge_app")):
                assert s.startswith(("from edge_app.vision", "import edge_app.vision")), f"{path.name}: {s}"
