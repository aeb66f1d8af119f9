"""The release (issue 15): the workflow that tags vX.Y.Z and moves v1, the sdist and wheel
twine accepts, and a distribution name that is ours on PyPI (``scopeguard`` there is an
unrelated project), used by every line that installs scopeguard."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from scopeguard import DIST_NAME, __version__

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _steps(job: str) -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"][job]["steps"]


def _step(job: str, name: str) -> dict:
    [step] = [s for s in _steps(job) if s.get("name", "").startswith(name)]
    return step


def test_the_distribution_name_is_ours_and_every_install_line_uses_it():
    assert _project()["name"] == DIST_NAME != "scopeguard"
    assert _project()["version"] == __version__
    assert _project()["scripts"]["scopeguard"] == "scopeguard.cli:cli"
    texts = {p: p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                                       ROOT / "Makefile", ROOT / "action.yml"]}
    for path, text in texts.items():
        for line in re.findall(r"pip install [^\n]*", text):
            # scopeguard is installed from a path, or by its distribution name: never as
            # "scopeguard", which would install someone else's project.
            assert not re.search(r"pip install (?:-U )?scopeguard(?![-\w])", line), (path, line)
    assert f"pip install {DIST_NAME}" in texts[ROOT / "README.md"]


def test_version_names_the_distribution(runner):
    from scopeguard.cli import cli

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert __version__ in result.output


def test_the_release_workflow_tags_builds_checks_and_publishes():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow[True]) == {"workflow_dispatch"}  # YAML reads `on` as True
    assert workflow["permissions"] == {"contents": "read"}
    read = _step("build", "Read the version")["run"]
    assert "pyproject.toml" in read and "refs/tags/v$version" in read
    build = _step("build", "Build the sdist")["run"]
    assert "python -m build" in build and "twine check --strict dist/*" in build
    assert "pypi.org/pypi/$name/json" in _step("build", "Check the PyPI name")["run"]
    jobs = workflow["jobs"]
    assert jobs["release"]["permissions"] == {"contents": "write"}
    assert jobs["publish"]["permissions"] == {"id-token": "write"}  # trusted publishing
    assert jobs["publish"]["environment"] == "pypi"
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish")
               for s in jobs["publish"]["steps"])


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_the_tag_step_tags_the_version_and_moves_the_major_tag(tmp_path):
    """The workflow's own script, run against a real git remote: v1.2.0 then v1.3.0, and
    v1 follows; a re-run of a released version fails instead of moving anything."""
    script = _step("release", "Tag vX.Y.Z")["run"]
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    _git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    _git("clone", "-q", str(remote), str(work), cwd=tmp_path)
    _git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty",
         "-m", "one", cwd=work)
    _git("push", "-q", "origin", "HEAD", cwd=work)

    def release(version: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-e", "-c", script], cwd=work, capture_output=True,
                              text=True, env={"VERSION": version, "PATH": "/usr/bin:/bin",
                                              "HOME": str(tmp_path)})

    first = release("1.2.0")
    assert first.returncode == 0, first.stderr
    one = _git("rev-parse", "HEAD", cwd=work)
    assert _git("rev-parse", "v1.2.0^{commit}", cwd=remote) == one
    assert _git("rev-parse", "v1^{commit}", cwd=remote) == one
    _git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty",
         "-m", "two", cwd=work)
    _git("push", "-q", "origin", "HEAD", cwd=work)
    assert release("1.3.0").returncode == 0
    two = _git("rev-parse", "HEAD", cwd=work)
    assert _git("rev-parse", "v1^{commit}", cwd=remote) == two  # v1 moved
    assert _git("rev-parse", "v1.2.0^{commit}", cwd=remote) == one  # the old one stays
    assert release("1.3.0").returncode != 0  # the tag exists: nothing is moved


def test_the_sdist_and_wheel_build_and_pass_twine(tmp_path):
    pytest.importorskip("build")
    if not shutil.which("twine", path=str(Path(sys.executable).parent)):
        pytest.skip("twine is not installed (pip install -e '.[dev]')")
    out = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                            str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    files = sorted(out.iterdir())
    underscored = DIST_NAME.replace("-", "_")
    assert [f.name for f in files] == [f"{underscored}-{__version__}-py3-none-any.whl",
                                       f"{underscored}-{__version__}.tar.gz"]
    checked = subprocess.run([str(Path(sys.executable).parent / "twine"), "check", "--strict",
                              *map(str, files)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wheel = zipfile.ZipFile(files[0])
    names = set(wheel.namelist())
    for module in ("scopeguard/cli.py", "scopeguard/positioning.schema.json",
                   "scopeguard/integrations/github/action.py",
                   "scopeguard/integrations/service/app.py",
                   "scopeguard/models/default-calibration.json",
                   "scopeguard/models/all-MiniLM-L6-v2/onnx/model.onnx",
                   "scopeguard/models/all-MiniLM-L6-v2/tokenizer.json",
                   "scopeguard/models/all-MiniLM-L6-v2/1_Pooling/config.json"):
        assert module in names, module
    metadata = wheel.read(f"{underscored}-{__version__}.dist-info/METADATA").decode()
    assert f"Name: {DIST_NAME}" in metadata
    entry = wheel.read(f"{underscored}-{__version__}.dist-info/entry_points.txt").decode()
    assert "scopeguard = scopeguard.cli:cli" in entry
