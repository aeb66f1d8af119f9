"""The layers ARCHITECTURE.md describes, kept: imports point one way, modules stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(path: Path) -> set[str]:
    """The modules ``path`` imports, relative ones resolved against its package."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    if package and package[0] == "integrations":
        package = ("scopeguard", *package)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            found.add(".".join([*base, *(node.module or "").split(".")]).strip("."))
    return found


@pytest.mark.parametrize("package", ["github", "jira"])
def test_tracker_packages_never_import_the_service(package):
    for path in (ROOT / "integrations" / package).glob("*.py"):
        bad = {m for m in imports(path) if m.startswith("scopeguard.integrations.service")}
        assert not bad, f"{path.name} imports {bad}"


def test_jira_and_github_packages_do_not_import_each_other():
    for one, other in (("github", "jira"), ("jira", "github")):
        for path in (ROOT / "integrations" / one).glob("*.py"):
            bad = {m for m in imports(path)
                   if m.startswith(f"scopeguard.integrations.{other}")}
            assert not bad, f"{one}/{path.name} imports {bad}"


def test_the_core_never_imports_the_integrations():
    for path in (ROOT / "scopeguard").glob("*.py"):
        if path.name == "cli.py":  # the edge: imports them lazily, inside commands
            continue
        bad = {m for m in imports(path) if "integrations" in m or m.split(".")[0] in (
            "github", "jira", "starlette", "uvicorn", "click")}
        assert not bad, f"{path.name} imports {bad}"


def printed(code: str) -> str:
    """What ``code`` prints in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_core_loads_no_tracker_web_or_model_library():
    assert printed("import sys, scopeguard, scopeguard.classify, scopeguard.engine, "
                   "scopeguard.render\n"
                   "heavy = {'github', 'jira', 'starlette', 'uvicorn', 'torch',\n"
                   "         'sentence_transformers', 'click'}\n"
                   "print(sorted(heavy & set(sys.modules)))") == "[]"


def test_the_sqlite_service_never_imports_psycopg(tmp_path):
    """psycopg loads only for a PostgreSQL --store (the postgres extra)."""
    assert printed("import sys\n"
                   "from scopeguard.integrations.service import app, lifecycle, storage\n"
                   "from scopeguard.integrations.service.settings import ServiceSettings\n"
                   f"settings = ServiceSettings.from_env({{}}, queue={str(tmp_path / 'q.db')!r}, "
                   "webhook_secret='x' * 32)\n"
                   "storage.open_queue(settings).close()\n"
                   "print(sorted(m for m in sys.modules if m.startswith('psycopg')))") == "[]"


def test_modules_stay_small_and_say_what_they_are_for():
    for path in sorted((ROOT / "integrations").rglob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 420, f"{path} has {len(text.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.strip(), f"{path} opens with no docstring"
