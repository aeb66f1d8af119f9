"""The audit's memo (scopeguard/memo.py): a re-audit recomputes only what changed, and its
results equal a run from scratch, for every kind of change. Real SQLite files; the hashing
embedder for the logic, the real model through the CLI."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from dataclasses import replace

import pytest

import scopeguard.engine as engine
from scopeguard.audit import build_report
from scopeguard.audit_render import FORMATS, render_report
from scopeguard.backlog import read_backlog
from scopeguard.cli import cli
from scopeguard.engine import Scopeguard
from scopeguard.errors import ScopeguardError
from scopeguard.memo import AnalysisMemo, StoredVerdicts
from scopeguard.positioning import load_positioning

WORDS = ("reminder booking export invoice calendar widget sms owners vets clinic diary "
         "waitlist report vaccine stock rota lab results slot cancel buffer surgery").split()


def backlog(n: int, seed: int = 3):
    """Requests drawn from a small vocabulary, so many are neighbours of each other."""
    rng = random.Random(seed)
    base = list(read_backlog("examples/backlog.jsonl"))
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        template = base[i % len(base)]
        out.append(replace(template, id=f"M-{i}", title=f"{words} {template.title}",
                           body=template.body[:200], customer=f"Clinic {i % 17}"))
    return out


@pytest.fixture
def guard(hashing, example_config):
    return Scopeguard(load_positioning(example_config), hashing)


def same(a, b):
    """Two analyses agree: verdicts field for field, neighbour ids in order, scores to 1e-5."""
    assert [v.to_dict() for v in a.verdicts] == [v.to_dict() for v in b.verdicts]
    assert [[j for j, _ in n] for n in a.neighbours] == [[j for j, _ in n] for n in b.neighbours]
    for x, y in zip(a.neighbours, b.neighbours, strict=True):
        assert all(abs(s - t) < 1e-5 for (_, s), (_, t) in zip(x, y, strict=True))


def test_an_unchanged_backlog_is_not_recomputed(guard, tmp_path, monkeypatch):
    requests = backlog(300)
    memo = AnalysisMemo(tmp_path / "m.db")
    first = guard.analyse(requests, memo=memo)
    assert memo.computed_verdicts == 300 and memo.reused_verdicts == 0
    assert any(first.neighbours), "the test backlog must have neighbours"

    calls = []
    monkeypatch.setattr(engine, "classify", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(engine, "neighbours_above", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(engine, "rows_above", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(Scopeguard, "embed", lambda *a, **k: calls.append(1))  # no cleaning
    again = AnalysisMemo(tmp_path / "m.db")
    second = guard.analyse(requests, memo=again)
    assert calls == []  # nothing classified, no similarity computed
    assert (again.reused_verdicts, again.computed_verdicts) == (300, 0)
    assert (again.reused_lists, again.computed_rows) == (300, 0)
    same(first, second)


def test_one_percent_changed_recomputes_only_what_it_touches(guard, tmp_path):
    requests = backlog(400)
    memo = AnalysisMemo(tmp_path / "m.db")
    guard.analyse(requests, memo=memo)
    changed = list(requests)
    changed[5] = replace(changed[5], body="A completely different ask: " + changed[5].body)
    changed[9] = replace(changed[9], customer="Someone Else")
    del changed[20]
    changed.append(replace(requests[30], id="M-new"))  # a near-copy: many new neighbours
    again = AnalysisMemo(tmp_path / "m.db")
    incremental = guard.analyse(changed, memo=again)
    assert again.computed_rows == 3  # 5, 9 and the new one; not n
    assert 3 <= again.computed_verdicts < 60
    same(incremental, guard.analyse(changed))


def test_random_edits_always_match_a_run_from_scratch(guard, tmp_path):
    rng = random.Random(11)
    requests = backlog(150)
    for round_ in range(6):
        memo = AnalysisMemo(tmp_path / "m.db")
        same(guard.analyse(requests, memo=memo), guard.analyse(requests))
        requests = list(requests)
        for _ in range(rng.randint(1, 8)):
            k = rng.randrange(len(requests))
            action = rng.choice(["edit", "drop", "add", "customer"])
            if action == "edit":
                requests[k] = replace(requests[k], title=rng.choice(WORDS) + " " + requests[k].title)
            elif action == "drop" and len(requests) > 20:
                del requests[k]
            elif action == "add":
                requests.append(replace(requests[k], id=f"A-{round_}-{k}"))
            else:
                requests[k] = replace(requests[k], customer=f"C{rng.randrange(5)}")


def test_a_full_list_that_loses_a_member_is_recomputed(guard, tmp_path):
    """60 copies of one ask: each list holds the best 50; dropping one of them means the
    51st best must come back, which the memo never stored."""
    base = backlog(1)[0]
    requests = [replace(base, id=f"D-{i}", customer=f"C{i}",
                        body=base.body + " x" * (i % 7)) for i in range(60)]
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    fewer = requests[:10] + requests[11:]
    memo = AnalysisMemo(tmp_path / "m.db")
    same(guard.analyse(fewer, memo=memo), guard.analyse(fewer))
    assert memo.computed_rows > 0


def test_a_changed_positioning_or_threshold_recomputes_every_verdict(guard, tmp_path,
                                                                      example_config):
    requests = backlog(100)
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    guard.rules = replace(guard.rules, min_customers=guard.rules.min_customers + 1)
    memo = AnalysisMemo(tmp_path / "m.db")
    guard.analyse(requests, memo=memo)
    assert memo.reused_verdicts == 0 and memo.reused_lists == 100  # lists do not depend on it
    positioning = load_positioning(example_config)
    other = Scopeguard(replace(positioning, need=positioning.need + " faster"), guard.embedder)
    memo = AnalysisMemo(tmp_path / "m.db")
    other.analyse(requests, memo=memo)
    assert memo.reused_verdicts == 0


def test_damaged_memo_rows_are_recomputed_not_trusted(guard, tmp_path):
    requests = backlog(80)
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    conn = sqlite3.connect(tmp_path / "m.db")
    with conn:
        conn.execute("UPDATE memo_verdicts SET verdict = 'not json' WHERE verdict_key IN "
                     "(SELECT verdict_key FROM memo_verdicts LIMIT 5)")
        conn.execute("UPDATE memo_verdicts SET verdict = '{\"label\": \"core\"}' WHERE "
                     "verdict_key IN (SELECT verdict_key FROM memo_verdicts LIMIT 3 OFFSET 10)")
        conn.execute("UPDATE memo_neighbours SET neighbours = '[[1,' WHERE request_key IN "
                     "(SELECT request_key FROM memo_neighbours LIMIT 4)")
        conn.execute("UPDATE memo_means SET vector = x'0000c07f0000c07f' WHERE request_key "
                     "IN (SELECT request_key FROM memo_means LIMIT 3)")  # NaN
        conn.execute("UPDATE memo_means SET vector = x'01' WHERE request_key IN "
                     "(SELECT request_key FROM memo_means LIMIT 2 OFFSET 20)")  # cut short
        # bytes that are not UTF-8 in a TEXT column (a damaged page): sqlite3 raised
        # "Could not decode to UTF-8" on every later run
        conn.execute("UPDATE memo_verdicts SET verdict = CAST(x'7b22ff22' AS TEXT) WHERE "
                     "verdict_key IN (SELECT verdict_key FROM memo_verdicts LIMIT 2 OFFSET 20)")
        conn.execute("UPDATE memo_neighbours SET neighbours = CAST(x'5b5bff' AS TEXT) WHERE "
                     "request_key IN (SELECT request_key FROM memo_neighbours LIMIT 1 "
                     "OFFSET 30)")
    conn.close()
    memo = AnalysisMemo(tmp_path / "m.db")
    same(guard.analyse(requests, memo=memo), guard.analyse(requests))
    assert memo.computed_verdicts >= 10 and memo.computed_rows == 5


def test_an_unchanged_audit_writes_its_stored_report_and_analyses_nothing(
        runner, tmp_path, example_config, example_backlog, monkeypatch):
    args = ["audit", "-c", str(example_config), "--db", str(tmp_path / "h.db"), "--model",
            "hashing", "--from-file", str(example_backlog), "--format", "html", "-o"]
    assert runner.invoke(cli, [*args, str(tmp_path / "a.html")]).exit_code == 0
    monkeypatch.setattr(Scopeguard, "analyse", lambda *a, **k: 1 / 0)
    again = runner.invoke(cli, [*args, str(tmp_path / "b.html")])
    assert again.exit_code == 0 and "nothing changed" in again.output, again.output
    assert (tmp_path / "a.html").read_text() == (tmp_path / "b.html").read_text()
    # the same positioning file named another way (or copied elsewhere): its content counts
    other = example_config.parent / ".." / example_config.parent.name / example_config.name
    copy = tmp_path / "copy" / "scopeguard.yml"
    copy.parent.mkdir()
    copy.write_text(example_config.read_text())
    for config in (other, copy):
        named = runner.invoke(cli, ["audit", "-c", str(config), *args[3:],
                                    str(tmp_path / "e.html")])
        assert named.exit_code == 0 and "nothing changed" in named.output, named.output
    # one request edited: the stored report no longer applies
    rows = example_backlog.read_text().splitlines()
    edited = json.loads(rows[0])
    edited["body"] += " Also by SMS."
    backlog = tmp_path / "edited.jsonl"
    backlog.write_text("\n".join([json.dumps(edited), *rows[1:]]) + "\n")
    changed = runner.invoke(cli, [*args[:-5], "--from-file", str(backlog), "--format", "html",
                                  "-o", str(tmp_path / "c.html")])
    assert isinstance(changed.exception, ZeroDivisionError)  # it went on to analyse
    # and a damaged stored report is not trusted
    conn = sqlite3.connect(tmp_path / "h.db")
    with conn:
        conn.execute("UPDATE memo_reports SET report = 'not json'")
    conn.close()
    damaged = runner.invoke(cli, [*args, str(tmp_path / "d.html")])
    assert isinstance(damaged.exception, ZeroDivisionError)


def test_a_stored_report_is_kept_in_parts_and_written_again_whole(
        runner, tmp_path, example_config, example_backlog, monkeypatch):
    import scopeguard.audit_render as audit_render
    import scopeguard.memo as memo_module

    monkeypatch.setattr(audit_render, "_PART", 500)  # many parts, even here
    monkeypatch.setattr(memo_module, "_REPORT_PART", 2000)
    db = tmp_path / "p.db"
    args = ["audit", "-c", str(example_config), "--db", str(db), "--model", "hashing",
            "--from-file", str(example_backlog), "--format", "csv"]
    first = runner.invoke(cli, [*args, "-o", str(tmp_path / "a.csv")])
    assert first.exit_code == 0, first.output
    conn = sqlite3.connect(db)
    parts = conn.execute("SELECT count(*) FROM memo_report_parts").fetchone()[0]
    conn.close()
    text = (tmp_path / "a.csv").read_text()
    assert len(text) // 2600 <= parts <= -(-len(text) // 2000)  # about one a 2,000 characters
    monkeypatch.setattr(Scopeguard, "analyse", lambda *a, **k: 1 / 0)
    to_stdout = runner.invoke(cli, args)
    assert to_stdout.exit_code == 0 and "nothing changed" in to_stdout.output
    assert to_stdout.stdout == text  # the same text, streamed to standard output
    # a damaged or a missing part: the stored report is not trusted, and not half written
    for damage in ("UPDATE memo_report_parts SET part = x'789c0b' WHERE n = 2",
                   "DELETE FROM memo_report_parts WHERE n = 1"):
        monkeypatch.undo()
        monkeypatch.setattr(audit_render, "_PART", 500)
        monkeypatch.setattr(memo_module, "_REPORT_PART", 2000)
        assert runner.invoke(cli, [*args, "-o", str(tmp_path / "b.csv")]).exit_code == 0
        conn = sqlite3.connect(db)
        with conn:
            conn.execute(damage)
        conn.close()
        monkeypatch.setattr(Scopeguard, "analyse", lambda *a, **k: 1 / 0)
        again = runner.invoke(cli, [*args, "-o", str(tmp_path / "b.csv")])
        assert isinstance(again.exception, ZeroDivisionError)  # it went on to analyse
        assert (tmp_path / "b.csv").read_text() == text  # the last report still whole


def test_an_audit_that_fails_while_writing_keeps_the_last_report_and_stores_none(
        runner, tmp_path, example_config, example_backlog, monkeypatch):
    import scopeguard.audit_render as audit_render
    import scopeguard.memo as memo_module

    monkeypatch.setattr(memo_module, "_REPORT_PART", 500)  # parts are stored before it fails
    db = tmp_path / "f.db"
    args = ["audit", "-c", str(example_config), "--db", str(db), "--model", "hashing",
            "--from-file", str(example_backlog), "--format", "json", "-o",
            str(tmp_path / "r.json")]
    assert runner.invoke(cli, args).exit_code == 0
    before = (tmp_path / "r.json").read_text()
    original = audit_render._request
    calls = [0]

    def breaks_halfway(item):
        calls[0] += 1
        if calls[0] == 20:
            raise RuntimeError("disk full, say")
        return original(item)

    monkeypatch.setattr(audit_render, "_request", breaks_halfway)
    failed = runner.invoke(cli, [*args, "--min-customers", "2"])  # another report
    assert isinstance(failed.exception, RuntimeError)
    assert (tmp_path / "r.json").read_text() == before  # whole, not half of the new one
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT count(*) FROM memo_reports").fetchone()[0]
    parts = conn.execute("SELECT DISTINCT report_key FROM memo_report_parts").fetchall()
    conn.close()
    assert stored == 1 and len(parts) == 1  # only the first audit's report, no staged parts


def test_the_memo_stores_a_report_only_when_every_part_was_taken(tmp_path):
    memo = AnalysisMemo(tmp_path / "s.db")
    parts = ["x" * 700, "y" * 900, "z" * 2_000_000, "end\n"]
    flow = memo.save_report("k1", iter(parts), "summary")
    assert [next(flow) for _ in range(4)] == parts  # the third part was stored on the fourth
    other = sqlite3.connect(tmp_path / "s.db", timeout=0.1)
    staged = other.execute("SELECT report_key FROM memo_report_parts").fetchall()
    assert len(staged) == 1 and staged[0][0].startswith("staging:")
    # a part is stored in its own transaction: no write lock is held between parts
    with other:
        other.execute("INSERT INTO memo_reports VALUES ('other', '{}', 0)")
    flow.close()  # the consumer went away: nothing of it is kept
    assert memo.report("k1") is None
    assert other.execute("SELECT count(*) FROM memo_report_parts").fetchone()[0] == 0
    # taken whole: kept, in parts, and read back the same
    assert list(memo.save_report("k1", iter(parts), "summary")) == parts
    stored = memo.report("k1")
    assert stored.summary == "summary" and stored.count == 2 and stored.text == "".join(parts)
    # a staged part that goes missing before the report is published: the sound report
    # stored before stays, and the memo says why the new one was not kept
    flow = memo.save_report("k1", iter(["new" * 400_000, "tail"]), "newer")
    next(flow), next(flow)
    with other:
        other.execute("DELETE FROM memo_report_parts WHERE report_key LIKE 'staging:%'")
    list(flow)
    assert "went missing" in memo.report_error and memo.report("k1").text == "".join(parts)
    # a killed audit's staged parts are removed by a later one once a day old
    running = f"staging:2:{time.time():.0f}"  # another audit's, running now
    with other:
        other.execute("INSERT INTO memo_report_parts VALUES ('staging:1:1000', 0, x'00')")
        other.execute("INSERT INTO memo_report_parts VALUES (?, 0, x'00')", (running,))
    list(memo.save_report("k2", iter(["a"]), "s"))
    keys = {k for (k,) in other.execute("SELECT DISTINCT report_key FROM memo_report_parts")}
    assert keys == {"k1", "k2", running}
    # a memo that cannot store it: the parts still flow, and it says why
    with other:
        other.execute("DROP TABLE memo_report_parts")
    assert list(memo.save_report("k3", iter(parts), "s")) == parts
    assert "no such table" in memo.report_error
    other.close()


def test_an_audit_written_to_a_link_follows_it_and_keeps_the_file_mode(
        runner, tmp_path, example_config, example_backlog):
    real = tmp_path / "reports" / "audit.csv"
    real.parent.mkdir()
    real.write_text("old")
    real.chmod(0o750)  # an execute bit: a new file never gets one
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db",
                                 str(tmp_path / "l.db"), "--model", "hashing", "--from-file",
                                 str(example_backlog), "--format", "csv", "-o", str(link)])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and real.read_text().startswith('"id","title"')
    assert real.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in real.parent.iterdir()) == ["audit.csv"]


def test_a_killed_audits_temporary_report_is_removed_a_day_later(
        runner, tmp_path, example_config, example_backlog):
    """A SIGKILLed audit leaves its temporary file beside the report; the next audit to
    that report removes it once it is a day old (a running audit's, fresh, stays)."""
    import os

    target = tmp_path / "out" / "audit[1].csv"  # glob characters in the name
    target.parent.mkdir()
    stale = target.parent / ".audit[1].csv.k1ll3d.scopeguard-partial"
    fresh = target.parent / ".audit[1].csv.running.scopeguard-partial"
    other = target.parent / ".other.csv.k1ll3d.scopeguard-partial"
    for path in (stale, fresh, other):
        path.write_text("half a report")
    two_days_ago = time.time() - 2 * 86400
    for path in (stale, other):
        os.utime(path, (two_days_ago, two_days_ago))
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db",
                                 str(tmp_path / "k.db"), "--model", "hashing", "--from-file",
                                 str(example_backlog), "--format", "csv", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith('"id","title"')
    assert not stale.exists() and fresh.exists() and other.exists()  # only its own, old


def test_an_audit_written_to_a_pipe_is_written_to_it_directly(
        runner, tmp_path, example_config, example_backlog):
    import os
    import threading

    fifo = tmp_path / "report.pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db",
                                 str(tmp_path / "p.db"), "--model", "hashing", "--from-file",
                                 str(example_backlog), "--format", "csv", "-o", str(fifo)])
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert received and received[0].startswith('"id","title"') and received[0].count("\n") > 60
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]  # no rename


def test_audit_cli_reuses_the_last_audit_with_the_real_model(runner, tmp_path, example_config,
                                                             example_backlog):
    db = tmp_path / "audit.db"  # its own file: the session cache may hold a memo already
    args = ["audit", "-c", str(example_config), "--db", str(db), "--from-file",
            str(example_backlog), "--format", "json", "-o", str(tmp_path / "a.json")]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "reused 0 verdict(s)" in first.output and "computed 66 and 66" in first.output
    second = runner.invoke(cli, args[:-1] + [str(tmp_path / "b.json")])
    assert second.exit_code == 0, second.output
    # nothing changed at all: the last report is written again, nothing is analysed
    assert "nothing changed since the last audit" in second.output
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    a.pop("generated_at", None), b.pop("generated_at", None)
    assert a == b
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    # the shipped head's certainty: most verdicts are left to a maintainer, and it says so
    pending = sum(r["needs_decision"] for r in a["requests"])
    assert 0 < pending == a["needs_decision"]
    assert f"({pending} of them not sure enough to decide alone" in a["summary"]
    # another format is another report: from the memo's verdicts, no new computation
    csv = runner.invoke(cli, args[:-4] + ["--format", "csv", "-o", str(tmp_path / "a.csv")])
    assert csv.exit_code == 0 and "computed 0 and 0" in csv.output, csv.output
    fresh = runner.invoke(cli, args[:-1] + [str(tmp_path / "c.json"), "--recompute"])
    assert fresh.exit_code == 0 and "reused" not in fresh.output
    c = json.loads((tmp_path / "c.json").read_text())
    c.pop("generated_at", None)
    assert c == a


class Designed:
    """Vectors by design: a text naming ``vA3`` gets group A's direction (plus a small
    individual part), ``vN`` the direction between A and B; anything else a far one."""

    model_id = "designed-8"

    def encode(self, texts, progress=None):
        import re

        import numpy as np

        out = []
        for text in texts:
            m = re.search(r"\bv([ABN])(\d*)\b", text)
            v = np.zeros(8, np.float32)
            if not m:
                v[7] = 1.0
            elif m.group(1) == "N":
                v[0] = v[1] = 1.0
            else:
                n = int(m.group(2))
                v[0 if m.group(1) == "A" else 1] = 1.0
                v[2 + n % 5] = 0.02 * (1 + n % 3)
            out.append(v / np.linalg.norm(v))
        if progress:
            progress(len(texts))
        return np.vstack(out) if out else np.zeros((0, 8), np.float32)


def test_a_new_request_with_more_than_fifty_hits_joins_every_short_list(tmp_path,
                                                                        example_config):
    """N is close to 35 requests of group A and 35 of group B (70 hits: its own list keeps
    50), and each A or B request has only its 34 siblings: every one of them must list N,
    as a run from scratch does."""
    guard = Scopeguard(load_positioning(example_config), Designed())
    guard.rules = replace(guard.rules, similar=0.6)
    base = backlog(1)[0]
    requests = [replace(base, id=f"{g}{n}", title=f"v{g}{n} ask", body="", customer=f"C{n}")
                for g in "AB" for n in range(35)]
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    grown = [*requests, replace(base, id="N", title="vN ask", body="", customer="CN")]
    memo = AnalysisMemo(tmp_path / "m.db")
    incremental = guard.analyse(grown, memo=memo)
    fresh = guard.analyse(grown)
    assert memo.computed_rows == 1
    assert all(70 in [j for j, _ in n] for n in fresh.neighbours[:70])
    same(incremental, fresh)


def test_a_cached_audit_streams_its_batches_and_matches_one_held_in_memory(
        hashing, example_config, tmp_path):
    """With the embedding cache, the audit embeds and classifies a batch at a time (its
    texts and chunk vectors dropped, read back from the cache to classify): the same
    verdicts and neighbours as an audit that holds everything, first and after edits,
    and each text still goes through the model once."""
    from scopeguard.cache import EmbeddingCache
    from scopeguard.embed import CachedEmbedder

    positioning = load_positioning(example_config)
    held = Scopeguard(positioning, hashing)  # no cache: everything stays in memory
    cached = CachedEmbedder(hashing, EmbeddingCache(tmp_path / "vectors.db"))
    streamed = Scopeguard(positioning, cached)
    streamed.batch = 7  # 130 requests: 19 batches, the last one short
    requests = backlog(129) + [replace(backlog(1)[0], id="M-zh", title="日历同步", body="")]
    memos = AnalysisMemo(tmp_path / "held.db"), AnalysisMemo(tmp_path / "streamed.db")
    first = held.analyse(requests, memo=memos[0]), streamed.analyse(requests, memo=memos[1])
    same(*first)
    # the streamed verdicts stay in the memo, read back a block of 7 at a time, in order
    kept = first[1].verdicts
    assert isinstance(kept, StoredVerdicts) and len(kept._block) <= 7
    assert kept[-1].request_id == "M-zh" and [v.request_id for v in kept[5:9]] == [
        r.id for r in requests[5:9]]
    with pytest.raises(IndexError):
        kept[len(requests)]
    reports = [build_report(a, held.index, held.rules, "Finder") for a in first]
    for fmt in FORMATS:
        assert render_report(reports[0], fmt) == render_report(reports[1], fmt), fmt
    assert reports[1].pending == sum(v.needs_decision for v in first[0].verdicts)
    conn = sqlite3.connect(tmp_path / "streamed.db")
    with conn:
        conn.execute("DELETE FROM memo_verdicts WHERE verdict_key = ?", (kept.keys[100],))
    conn.close()
    with pytest.raises(ScopeguardError, match="left the cache file while it ran"):
        StoredVerdicts(memos[1], kept.keys, 7)[99]
    texts = len(set(cached.seen))
    assert cached.computed == texts and cached.hits >= len(requests)  # read back, not re-run
    assert cached.cache.damaged == 0  # nothing read back was taken for a damaged row
    edited = list(requests)
    for i in (3, 50, 129):
        edited[i] = replace(edited[i], title=edited[i].title + " and a waitlist", body="x")
    edited.append(replace(requests[0], id="M-new", title="sms reminder for owners"))
    same(held.analyse(edited, memo=memos[0]), streamed.analyse(edited, memo=memos[1]))
    assert memos[1].computed_verdicts < len(edited) + len(requests)  # the memo still works


def test_two_audits_on_one_file_at_once_leave_no_mixed_lists(guard, tmp_path, monkeypatch):
    """Audit A reads the kept lists, audit B (another backlog) saves its own, then A saves
    its changed lists on top: the file held lists of neither backlog, and every later run
    kept them (a request's demand undercounted for good). Now A sees that B saved and
    keeps nothing; the next run computes afresh and equals a run from scratch."""
    requests = backlog(200)
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    backlog_a = requests[:150] + [replace(requests[7], id="A-new")]
    backlog_b = requests[20:] + [replace(requests[9], id="B-new"),
                                 replace(requests[40], id="B-new2")]
    real_save = AnalysisMemo.save_neighbours
    raced = []

    def save_after_b(self, *args, **kwargs):
        if not raced:  # B runs whole between A's read and A's save
            raced.append(1)
            guard.analyse(backlog_b, memo=AnalysisMemo(tmp_path / "m.db"))
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(AnalysisMemo, "save_neighbours", save_after_b)
    memo_a = AnalysisMemo(tmp_path / "m.db")
    result_a = guard.analyse(backlog_a, memo=memo_a)
    monkeypatch.setattr(AnalysisMemo, "save_neighbours", real_save)
    assert raced and memo_a.neighbour_conflict
    same(result_a, guard.analyse(backlog_a))  # A's own result was right
    later = backlog_b + [replace(requests[3], id="later")]
    memo = AnalysisMemo(tmp_path / "m.db")
    same(guard.analyse(later, memo=memo), guard.analyse(later))
    assert memo.reused_lists == 0  # nothing kept from the race
    again = AnalysisMemo(tmp_path / "m.db")
    same(guard.analyse(later, memo=again), guard.analyse(later))
    assert again.reused_lists == len(later)  # and kept again afterwards


def test_a_read_only_or_newer_memo_file_is_no_traceback(guard, tmp_path):
    """A cache file whose memo tables gained a column (a newer scopeguard) is written by
    column name; a read-only one still serves an unchanged re-audit (only the rows'
    last-used marks are not written)."""
    requests = backlog(40)
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    with sqlite3.connect(tmp_path / "m.db") as conn:
        for table in ("memo_neighbours", "memo_members", "memo_means", "memo_verdicts",
                      "memo_reports", "memo_report_parts"):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN later TEXT")
    changed = [replace(requests[0], title="A new title " + requests[0].title), *requests[1:]]
    memo = AnalysisMemo(tmp_path / "m.db")
    same(guard.analyse(changed, memo=memo), guard.analyse(changed))
    memo.close()
    reader = AnalysisMemo(tmp_path / "m.db")
    reader.conn.execute("PRAGMA query_only = ON")  # every write now fails as read-only would
    assert len(reader.verdicts([], touch=True)) == 0
    keys = [k for (k,) in reader.conn.execute("SELECT verdict_key FROM memo_verdicts")]
    assert len(reader.verdicts(keys)) == len(keys)  # read, the failed mark ignored


def test_which_of_many_tied_neighbours_are_kept_does_not_depend_on_the_file_order(guard,
                                                                                   tmp_path):
    """Neighbour lists stop at 50. Among more than 50 requests tied on one score, the
    members were chosen by position in the file: the same backlog reordered gave other
    demand (22 distinct customers against 32), and a re-audit of the reordered file kept
    the old members where a fresh run chose others. Ties now go by the requests' keys."""
    base = list(read_backlog("examples/backlog.jsonl"))
    ask = base[10]
    same_clinic = [replace(ask, id=f"S-{k}", customer="Alpha Vets") for k in range(30)]
    many = [replace(ask, id=f"M-{k}", customer=f"Clinic {k}") for k in range(30)]
    first = base[:20] + same_clinic + many
    second = base[:20] + many + same_clinic

    def by_id(analysis, requests):
        return {r.id: (v.label, v.signals.get("demand"), sorted(requests[j].id for j, _ in n))
                for r, v, n in zip(requests, analysis.verdicts, analysis.neighbours,
                                   strict=True)}

    assert by_id(guard.analyse(first), first) == by_id(guard.analyse(second), second)
    memo = AnalysisMemo(tmp_path / "m.db")
    guard.analyse(first, memo=memo)
    again = AnalysisMemo(tmp_path / "m.db")
    kept = guard.analyse(second, memo=again)
    assert again.reused_lists > 0
    assert by_id(kept, second) == by_id(guard.analyse(second), second)


def test_a_new_build_of_the_deciding_code_reuses_nothing_kept_by_the_old_one(guard, tmp_path,
                                                                              monkeypatch):
    """The memo was keyed by the version number, the same for every commit: a change to
    how verdicts are made, not followed by a new number, reused the old verdicts. It is
    keyed by a hash of the deciding modules' code now."""
    assert re.fullmatch(r"[0-9a-f]{16}", engine.code_version())
    requests = backlog(60)
    guard.analyse(requests, memo=AnalysisMemo(tmp_path / "m.db"))
    same_build = AnalysisMemo(tmp_path / "m.db")
    guard.analyse(requests, memo=same_build)
    assert same_build.computed_verdicts == 0 and same_build.reused_lists == 60
    monkeypatch.setattr(engine, "code_version", lambda *modules: f"another build {modules}")
    new_build = AnalysisMemo(tmp_path / "m.db")
    same(guard.analyse(requests, memo=new_build), guard.analyse(requests))
    assert new_build.computed_verdicts == 60 and new_build.reused_lists == 0
