"""`scopeguard audit` end to end on the example backlog, with the real model, and the HTML
report checked in headless Chromium."""

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from scopeguard.cli import cli

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
                  "--v=0"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: run 'apt-get install chromium' (.ci/run does)")
    return path


def render(page: Path, tmp_path: Path) -> tuple[str, list[str], Path]:
    """(DOM after load, console messages, screenshot) of ``page`` in headless Chromium."""
    shot = tmp_path / "shot.png"
    profile = tmp_path / "profile"
    dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                    "--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120, check=True)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console, shot


def test_console_errors_are_caught(tmp_path):
    """The check below could fail: a page with a script error shows up in the console list."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); nope();</script></body></html>")
    _, console, _ = render(page, tmp_path)
    assert any("boom" in line for line in console)
    assert any("Uncaught ReferenceError" in line for line in console)


@pytest.fixture(scope="module")
def audit_outputs(tmp_path_factory, session_db, example_config, example_backlog):
    """One audit of the example backlog per format, all against the session cache."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("audit")
    runner = CliRunner()
    results = {}
    for fmt, ext in (("table", "txt"), ("json", "json"), ("csv", "csv"), ("markdown", "md"),
                     ("html", "html")):
        path = out / f"report.{ext}"
        result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db", str(session_db),
                                     "--from-file", str(example_backlog), "--format", fmt,
                                     "-o", str(path)])
        assert result.exit_code == 0, result.output + result.stderr
        results[fmt] = (path, result)
    return results


def test_audit_of_examples_writes_every_format(audit_outputs, example_backlog):
    n = sum(1 for line in example_backlog.read_text().splitlines() if line.strip())
    data = json.loads(audit_outputs["json"][0].read_text())
    assert len(data["requests"]) == n
    assert data["summary"].startswith(f"of {n} open requests")
    whatsapp = next(c for c in data["clusters"] if "PAW-111" in c["members"])
    assert whatsapp["distinct_customers"] >= 3
    rows = list(csv.DictReader(io.StringIO(audit_outputs["csv"][0].read_text())))
    assert len(rows) == n and {r["label"] for r in rows} <= {"core", "generalizable", "one_off"}
    md = audit_outputs["markdown"][0].read_text()
    assert md.startswith("# Scope audit: Pawtrack") and "## Requests nearest each non-goal" in md
    table = audit_outputs["table"][0].read_text()
    assert table.strip().splitlines()[-1] == data["summary"]
    for fmt in ("table", "json", "csv", "markdown", "html"):  # each file ends its last line
        assert audit_outputs[fmt][0].read_text().endswith("\n"), fmt
    assert data["summary"] in audit_outputs["table"][1].stderr


def test_html_report_renders_in_chromium_with_charts(audit_outputs, tmp_path):
    page = audit_outputs["html"][0]
    html = page.read_text()
    assert "http://" not in html.split("<table id=\"requests\">")[0]  # nothing fetched
    dom, console, shot = render(page, tmp_path)
    assert console == [], console
    for chart in ("drift-chart", "clusters-chart", "customers-chart"):
        assert f'id="{chart}"' in dom
    assert dom.count("<rect") > 20 and 'id="non-goals"' in dom
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_cached_re_audit_embeds_nothing(runner, tmp_path, example_config, example_backlog):
    """A second audit of an unchanged backlog embeds nothing (real model, fresh cache)."""
    db = tmp_path / "fresh.db"
    args = ["audit", "-c", str(example_config), "--db", str(db), "--from-file",
            str(example_backlog), "--format", "json", "-o", str(tmp_path / "r.json")]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.stderr
    assert "embedded 0 new" not in first.stderr
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "embedded 0 new text(s)" in second.stderr


def test_audit_needs_exactly_one_source(runner, example_config, example_backlog):
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--model", "hashing"])
    assert result.exit_code == 2 and "exactly one source" in result.stderr
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--model", "hashing",
                                 "--from-file", str(example_backlog), "--jira", "PAW"])
    assert result.exit_code == 2


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"),
                                         ("list.json", "[]"), ("header.csv", "title,body\n")])
def test_an_empty_backlog_file_keeps_the_last_report(runner, tmp_path, example_config,
                                                     example_backlog, name, text):
    """A backlog file with no request (most likely a failed export) is exit 2 naming it;
    the report of the last audit is left as it was, not replaced by an empty one."""
    report, db = tmp_path / "report.html", tmp_path / "c.db"
    base = ["audit", "-c", str(example_config), "--model", "hashing", "--db", str(db),
            "--format", "html", "-o", str(report), "-q"]
    assert runner.invoke(cli, [*base, "--from-file", str(example_backlog)]).exit_code == 0
    before = report.read_bytes()
    empty = tmp_path / name
    empty.write_text(text)
    result = runner.invoke(cli, [*base, "--from-file", str(empty)])
    assert result.exit_code == 2, result.output
    assert f"{empty}: holds no requests" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr
    assert report.read_bytes() == before


def test_audit_skips_non_features(runner, tmp_path, example_config):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"id": "1", "title": "Crash on start", "labels": ["bug"]}) + "\n"
                    + json.dumps({"id": "2", "title": "Waitlist by email"}) + "\n")
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--model", "hashing",
                                 "--db", str(tmp_path / "c.db"), "--from-file", str(path),
                                 "--json"])
    data = json.loads(result.output)
    assert [r["id"] for r in data["requests"]] == ["2"]
    assert data["skipped"] == [{"id": "1", "why": "has label 'bug'"}]
