"""The labelled corpus: product files as of each request, validated rows, exact masking, the
held-out split, and an eval that reports the readers' agreement, intervals and rule steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scopeguard.cli import cli
from scopeguard.corpus import cohen_kappa, leaks, load_corpus, mask_exact, positioning_for
from scopeguard.dataset import Labelled
from scopeguard.errors import ConfigError, InputError
from scopeguard.evaluate import bootstrap, evaluate, format_report, readers_agreement, step_recall

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "data" / "corpus"


def product(slug: str, year: str, features: list, non_goals=(), kind="developer-tool") -> dict:
    return {"meta": {"slug": slug, "repo": f"acme/{slug}", "as_of": f"{year}-01-01",
                     "commit": "0" * 40, "kind": kind, "source_urls": ["https://x/README.md"]},
            "product": slug.title(), "category": f"For finding things, use {slug}",
            "target_customer": "", "need": "find files by name", "main_value": "",
            "alternative": "", "uniqueness": "", "statements": [f"{slug} finds files."],
            "features": features, "non_goals": list(non_goals)}


def row(i: int, slug: str, year: str, label: str, step: int, outcome="unknown", **extra) -> dict:
    readers = [{"reader": "A", "label": label, "rule_step": step},
               {"reader": "B", "label": extra.pop("b_label", label), "rule_step": step}]
    return {"id": f"{slug}-{i}", "product": slug, "url": f"https://x/{i}", "title": f"ask {i}",
            "body": f"please add thing {i} for finding files", "author": f"u{i}",
            "created_at": f"{year}-06-01", "product_file": year, "label": label,
            "rule_step": step, "deciding_anchor": "", "reason": "", "readers": readers,
            "outcome": outcome, "evidence": "", "shipped_as": "", **extra}


def write(tmp_path: Path, products: list[tuple[str, str, dict]], rows: list[dict],
          heldout=()) -> Path:
    for slug, year, data in products:
        path = tmp_path / "products" / slug / f"{year}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data))
    (tmp_path / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "split.json").write_text(json.dumps({"heldout": list(heldout)}))
    return tmp_path


LABELS_CYCLE = [("core", 6), ("one_off", 2), ("generalizable", 5), ("one_off", 1)]


@pytest.fixture
def small(tmp_path):
    products, rows = [], []
    for slug in ("finder", "grepper", "lister"):
        for year in ("2020", "2021"):
            products.append((slug, year, product(slug, year, ["Filter by type (--type)",
                                                              "Colour output, --color"],
                                                 ["Content search"])))
        for i in range(8):
            label, step = LABELS_CYCLE[i % 4]
            rows.append(row(i, slug, "2020" if i < 4 else "2021", label, step,
                            outcome=["accepted", "declined", "unknown", "declined"][i % 4],
                            b_label="core" if i == 1 else label))
    return write(tmp_path, products, rows, heldout=["lister"])


def test_load_corpus_reads_files_per_year_and_the_split(small):
    corpus = load_corpus(small)
    assert set(corpus.products) == {f"{s}/{y}" for s in ("finder", "grepper", "lister")
                                    for y in ("2020", "2021")}
    assert corpus.heldout == ("lister",) and corpus.kinds["finder"] == "developer-tool"
    first = corpus.items[0]
    assert (first.product, first.product_file, first.label, first.rule_step) == \
        ("finder", "finder/2020", "core", 6)
    assert [r.reader for r in first.readers] == ["A", "B"]
    assert positioning_for(corpus.products, first).features[0].name == "Filter by type (--type)"
    train = corpus.select("train")
    assert {i.product for i in train.items} == {"finder", "grepper"}
    assert {i.product for i in corpus.select("heldout").items} == {"lister"}
    outcome = corpus.select("all", target="outcome")
    assert len(outcome.items) == 18  # unknown outcomes left out
    assert {(i.request.label, i.label) for i in outcome.items} >= {("core", "core"),
                                                                    ("one_off", "one_off")}


@pytest.mark.parametrize("change, error", [
    (lambda r: r.update(label="maybe"), "label 'maybe'"),
    (lambda r: r.update(outcome="shipped"), "outcome 'shipped'"),
    (lambda r: r.update(product_file="1999"), "no product file finder/1999"),
    (lambda r: r.update(created_at="2019-12-31"), "after the request"),
    (lambda r: r.update(mask="no such words"), "occurs in 0 feature lines"),
    (lambda r: r.pop("outcome"), "outcome is missing"),
])
def test_bad_rows_are_refused_naming_the_line(small, change, error):
    rows = [json.loads(x) for x in (small / "requests.jsonl").read_text().splitlines()]
    change(rows[2])
    (small / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=error) as caught:
        load_corpus(small)
    assert "line 3" in str(caught.value)


def test_bad_product_files_are_refused(small):
    path = small / "products" / "finder" / "2020.yml"
    data = yaml.safe_load(path.read_text())
    data["meta"]["kind"] = "toy"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="meta.kind"):
        load_corpus(small)
    data["meta"]["kind"] = "business"
    data["meta"]["slug"] = "other"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="differs from its folder"):
        load_corpus(small)


def test_masking_is_exact_and_validated(small):
    corpus = load_corpus(small)
    p = corpus.products["finder/2020"].positioning
    assert [f.name for f in mask_exact(p, "Filter by type (--type)", "r").features] == \
        ["Colour output, --color"]
    assert [f.name for f in mask_exact(p, "--color", "r").features] == \
        ["Filter by type (--type)", "Colour output"]
    assert [f.name for f in mask_exact(p, "(--type)", "r").features][0] == "Filter by type"
    with pytest.raises(InputError, match="occurs in 0"):
        mask_exact(p, "--size", "r")


def test_no_request_sees_its_own_shipped_capability(small, tmp_path):
    corpus = load_corpus(small)
    assert leaks(corpus.items, corpus.products, corpus.as_of) == []
    # A file dated after its request is a leak (the loader refuses one; leaks says so too).
    late = {**corpus.as_of, "finder/2020": "2020-07-01"}
    assert leaks(corpus.items, corpus.products, late) == ["finder-0", "finder-1", "finder-2",
                                                          "finder-3"]
    # One file per product (no product_file): a shipped_as left after masking leaks.
    from scopeguard.dataset import load_labelled, load_products

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "finder.yml").write_text(yaml.safe_dump({
        "slug": "finder", "name": "finder", "positioning": ["finds files"],
        "features": ["Filter by type (--type)", "Colour output, --color"]}))
    products = load_products(tmp_path / "p")
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "x", "product": "finder", "title": "t", "label": "core", '
                    '"shipped_as": "--color"}\n')
    items = load_labelled(path, products)
    assert items[0].mask == "--color" and leaks(items, products) == []


def test_the_shipped_corpus_loads_and_leaks_nothing():
    if not (CORPUS / "requests.jsonl").exists():
        pytest.skip("no corpus in this checkout")
    corpus = load_corpus(CORPUS)
    assert leaks(corpus.items, corpus.products, corpus.as_of) == []
    assert corpus.heldout and not set(corpus.heldout) - set(corpus.kinds)
    reserved = {"ripgrep", "black", "excalidraw", "miniflux", "syncthing", "metabase", "cal.com",
                "calcom", "cal-com"}
    assert not reserved & set(corpus.kinds)
    assert all(len(i.readers) >= 2 for i in corpus.items)
    assert len(corpus.items) >= 1500 and len(corpus.kinds) >= 40  # issue 12's size


def test_the_synthetic_requests_are_of_training_products_and_name_real_anchors():
    import json

    import yaml

    synthetic = CORPUS.parent / "synthetic"
    if not synthetic.exists():
        pytest.skip("no synthetic requests in this checkout")
    heldout = set(json.loads((CORPUS / "split.json").read_text())["heldout"])
    implied = {"served_by": ("one_off", 2), "instance_of": ("one_off", 1),
               "other_product": ("one_off", 3), "situation": ("one_off", 4),
               "general_form": ("generalizable", 5), "extends": ("core", 6)}
    total = 0
    for path in sorted(synthetic.glob("*.jsonl")):
        assert path.stem not in heldout, path  # never written against an evaluation product
        lines = path.read_text().splitlines()
        doc = yaml.safe_load((CORPUS / "products" / path.stem /
                              f"{json.loads(lines[0])['product_file']}.yml").read_text())
        names = {x["name"] if isinstance(x, dict) else x
                 for x in [*(doc.get("features") or []), *(doc.get("non_goals") or [])]}
        fields = {f"{k}: {doc[k]}" for k in ("category", "target_customer", "need",
                                              "main_value", "uniqueness") if doc.get(k)}
        fields |= {f"statement: {x}" for x in doc.get("statements") or []}
        for line in lines:
            row = json.loads(line)
            assert row["product"] == path.stem
            assert implied[row["relation"]] == (row["label"], row["rule_step"]), row["id"]
            assert row["anchor"] in names | fields, (row["id"], row["anchor"])
            total += 1
    assert total >= 2000
    checked = [json.loads(x) for x in
               (synthetic / "check" / "blind-check.jsonl").read_text().splitlines()]
    agree = sum(c["intended_label"] == c["reader_label"] for c in checked)
    assert len(checked) == 120 and agree == 117  # the figure DATASHEET.md reports


def test_kappa_and_readers_agreement():
    assert cohen_kappa(["core", "one_off"] * 5, ["core", "one_off"] * 5) == 1.0
    assert cohen_kappa(["core"] * 4 + ["one_off"] * 4,
                       ["core", "one_off"] * 4) == pytest.approx(0.0)
    from scopeguard.backlog import Request
    from scopeguard.corpus import Reading

    items = [Labelled(Request(id=str(k), title="t", label=a), "p", a,
                      readers=(Reading("A", a), Reading("B", b)))
             for k, (a, b) in enumerate([("core", "core"), ("one_off", "one_off"),
                                         ("core", "one_off"), ("generalizable", "generalizable")])]
    agreement = readers_agreement(items)
    assert agreement["n"] == 4 and agreement["accuracy"] == 0.75
    assert 0 < agreement["kappa"] < 0.75


def test_bootstrap_intervals_and_step_recall():
    truth = ["core", "one_off"] * 20
    perfect = bootstrap(truth, truth, ["a", "b", "c", "d"] * 10, rounds=200)
    assert perfect["accuracy"] == (1.0, 1.0)
    noisy = bootstrap(truth, ["core"] * 40, ["a", "b", "c", "d"] * 10, rounds=200)
    low, high = noisy["accuracy"]
    assert low <= 0.5 <= high
    from scopeguard.backlog import Request

    items = [Labelled(Request(id=str(k), title="t"), "p", lab, rule_step=step)
             for k, (lab, step) in enumerate([("one_off", 1), ("one_off", 1), ("core", 6)])]
    assert step_recall(items, ["one_off", "core", "core"]) == {1: (0.5, 2), 6: (1.0, 1)}


def test_eval_reports_ceiling_intervals_steps_and_the_heldout_split(small, hashing):
    corpus = load_corpus(small)
    chosen = corpus.select("all")
    report = evaluate(chosen.items, chosen.products, hashing, "heldout",
                      heldout=corpus.heldout, rounds=50)
    assert report.scored_products == ["lister"] and report.n == 8
    assert report.readers["n"] == 8 and report.readers["accuracy"] == 0.875  # B differs once
    assert set(report.steps["majority class"]) == {1, 2, 5, 6}
    text = format_report(report)
    assert "ceiling: readers A vs B" in text and "95% CI" in text
    assert "recall by the rule step" in text and "1 non-goal" in text
    # A head scored as it is gets its risk-coverage table: the accuracy of the labels a
    # "needs decision" threshold would keep, computed from its own confidences.
    from scopeguard.calibration import fit

    head = fit([{"feature_top3": 0.1 * k, "positioning_fit": 0.2, "log_words": 2.0}
                for k in range(6)], ["core", "one_off", "core", "generalizable", "core",
                                     "one_off"])
    given = evaluate(chosen.items, chosen.products, hashing, "heldout",
                     heldout=corpus.heldout, rounds=20, head=head)
    [(name, rows)] = given.coverage.items()
    assert name == f"model + {head.name}" and rows[0][0] == 1.0 and rows[0][2] == 8
    assert rows[0][1] == given.methods[name].accuracy  # all kept: the plain accuracy
    assert "risk-coverage of" in format_report(given)
    assert given.gate == {}  # no certainty table: no gate to report
    # With a certainty table, the gate reports what it labels and how right that is.
    from scopeguard.certainty import kind

    predicted = given.predictions[name]
    sure = {p for p, t in zip(predicted, given.ids, strict=True)}
    head.certainty = {kind("calibrated", c): [[0.0, 0.9 if c == predicted[0] else 0.5, 30]]
                      for c in sure | {"core", "generalizable", "one_off"}}
    gated = evaluate(chosen.items, chosen.products, hashing, "heldout",
                     heldout=corpus.heldout, rounds=20, head=head)
    g = gated.gate[name]
    truth = [i.label for i in chosen.items if i.product == "lister"]
    kept = [(p, t) for p, t in zip(predicted, truth, strict=True) if p == predicted[0]]
    assert g["requests"] == 8 and g["given"] == len(kept) and g["labels"] == {
        predicted[0]: len(kept)}
    assert g["accuracy"] == round(sum(p == t for p, t in kept) / len(kept), 4)
    assert "needs-decision gate of" in format_report(gated)


def test_eval_cli_on_a_corpus(small, runner, tmp_path):
    out = tmp_path / "eval.json"
    result = runner.invoke(cli, ["eval", "--corpus", str(small), "--split", "heldout",
                                 "--model", "hashing", "--db", str(tmp_path / "c.db"),
                                 "--rounds", "50", "--calibration", "none",
                                 "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["protocol"] == "heldout" and set(data["products"]) == {"lister"}
    assert data["readers"]["kappa"] is not None and "majority class" in data["ci"]
    result = runner.invoke(cli, ["eval", "--corpus", str(small), "--target", "outcome",
                                 "--model", "hashing", "--db", str(tmp_path / "c.db"),
                                 "--rounds", "50", "--calibration", "none"])
    assert result.exit_code == 0 and "the maintainers' outcome" in result.output
    assert "readers' label vs outcome" in result.output
    refused = runner.invoke(cli, ["calibrate", "--corpus", str(small), "--split", "heldout",
                                  "--model", "hashing"])
    assert refused.exit_code == 2 and "never used to fit" in refused.output


DEV_LABELS = ROOT / "models" / "data" / "dev-labels"
DEV_TEXTS = ROOT.parent / "shared" / "data" / "dev" / "requests.jsonl"


def test_a_labels_only_corpus_joins_its_texts_by_id(small, tmp_path, runner):
    rows = [json.loads(x) for x in (small / "requests.jsonl").read_text().splitlines()]
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({k: r[k] for k in ("id", "title", "body", "author")})
                             + "\n" for r in rows))
    (small / "requests.jsonl").write_text("".join(
        json.dumps({k: v for k, v in r.items() if k not in ("title", "body", "author")}) + "\n"
        for r in rows))
    with pytest.raises(InputError, match="pass --texts"):
        load_corpus(small)
    corpus = load_corpus(small, texts)
    assert [i.request.title for i in corpus.items] == [r["title"] for r in rows]
    assert corpus.items[3].request.body == rows[3]["body"]
    texts.write_text("".join(json.dumps({"id": r["id"], "title": r["title"]}) + "\n"
                             for r in rows[1:]))
    with pytest.raises(InputError, match=f"{rows[0]['id']!r} is not in"):
        load_corpus(small, texts)
    result = runner.invoke(cli, ["eval", "--requests", str(texts), "--texts", str(texts)])
    assert result.exit_code == 2 and "--texts go with --corpus" in result.output


def test_the_dev_relabel_keeps_no_dev_text_and_validates_with_its_texts():
    """models/data/dev-labels: the dev set's request-time labels (two blind readers and a
    third for their disagreements), product files as of each year, no request text."""
    rows = [json.loads(x) for x in (DEV_LABELS / "requests.jsonl").read_text().splitlines()]
    assert rows and all("title" not in r and "body" not in r and "evidence" not in r
                        for r in rows)
    assert all(len(r["readers"]) >= 2 and r["outcome"] for r in rows)
    assert all(r["readers"][0]["label"] == r["readers"][1]["label"] or
               r["decided"] == "C settled A/B" for r in rows)
    if not DEV_TEXTS.exists():
        pytest.skip("the dev set is not beside this checkout")
    corpus = load_corpus(DEV_LABELS, DEV_TEXTS)
    assert len(corpus.items) == len(rows)
    assert leaks(corpus.items, corpus.products, corpus.as_of) == []
