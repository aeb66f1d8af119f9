import json
from pathlib import Path

import numpy as np
import pytest

from scopeguard.calibration import Calibration, fit, head_for
from scopeguard.cli import cli
from scopeguard.errors import ConfigError, InputError
from scopeguard.evaluate import folds, metrics
from scopeguard.positioning import load_positioning


def test_metrics_by_hand():
    truth = ["core", "core", "one_off", "one_off", "generalizable"]
    pred = ["core", "one_off", "one_off", "one_off", "core"]
    m = metrics(truth, pred)
    assert m.accuracy == 0.6
    assert m.per_class["core"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m.per_class["one_off"]["precision"] == round(2 / 3, 4)
    assert m.per_class["generalizable"]["f1"] == 0.0
    assert m.macro_f1 == round((0.5 + 0.8 + 0.0) / 3, 4)
    assert m.confusion["core"]["one_off"] == 1 and m.confusion["generalizable"]["core"] == 1


def test_folds():
    class Item:
        def __init__(self, p):
            self.product = p
    items = [Item("a"), Item("b"), Item("a"), Item("c")]
    lopo = folds(items, "lopo")
    assert [(n, te) for n, _, te in lopo] == [("a", [0, 2]), ("b", [1]), ("c", [3])]
    assert all(not set(tr) & set(te) for _, tr, te in lopo)
    k = folds(items * 3, "kfold")
    assert sorted(i for _, _, te in k for i in te) == list(range(12))
    with pytest.raises(InputError, match="two or more products.*Fix: use --protocol kfold"):
        folds([Item("a")], "lopo")


def signals(fit_value, demand=1.0):
    return {"feature_fit": fit_value, "feature_top3": fit_value, "positioning_fit": fit_value,
            "non_goal": 0.1, "non_goal_margin": 0.1 - fit_value, "fit": fit_value,
            "demand": demand, "custom_strong": 0.0, "custom_weak": 0.0, "question": 0.0,
            "log_words": 3.0}


def test_fit_learns_a_separable_rule(tmp_path):
    rows = [signals(0.8)] * 5 + [signals(0.5)] * 5 + [signals(0.1)] * 5
    labels = ["core"] * 5 + ["generalizable"] * 5 + ["one_off"] * 5
    head = fit(rows, labels, l2=0.01, class_weight="balanced")
    assert [head.decide(r).label for r in (signals(0.85), signals(0.5), signals(0.05))] == \
        ["core", "generalizable", "one_off"]
    path = tmp_path / "cal.json"
    head.save(path)
    again = Calibration.load(path)
    assert again.probabilities(signals(0.5)) == pytest.approx(head.probabilities(signals(0.5)))
    assert again.name == "calibration:cal.json"
    with pytest.raises(ValueError, match="two different labels"):
        fit(rows[:2], ["core", "core"])


def test_class_weights_trade_prior_for_rare_labels():
    """Unweighted keeps the history's prior: with no signal it answers the majority label;
    balanced weighting spreads the answers over the labels."""
    rows = [signals(0.5)] * 10
    labels = ["one_off"] * 6 + ["core"] * 3 + ["generalizable"]
    assert fit(rows, labels, class_weight="none").decide(signals(0.5)).label == "one_off"
    probs = fit(rows, labels, class_weight="balanced").probabilities(signals(0.5))
    assert max(probs.values()) - min(probs.values()) < 0.05
    with pytest.raises(ValueError, match="class_weight"):
        fit(rows, labels, class_weight="heavy")


def test_bad_calibration_files(tmp_path):
    with pytest.raises(ConfigError, match="calibration file not found"):
        Calibration.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": [[1]], "bias": [0], "mean": [0], "scale": [1],
                               "features": ["fit"], "classes": ["core", "one_off"]}))
    with pytest.raises(ConfigError, match="wrong shape"):
        Calibration.load(bad)
    # an edited head: what calibrate --measure reads ended in a traceback (AttributeError)
    good = json.loads(Calibration.load(
        Path(__file__).parents[1] / "models" / "default-calibration.json").dumps())
    for key, value, why in [("fitted_on", [], "fitted_on is not an object"),
                            ("fitted_on", "x", "fitted_on is not an object"),
                            ("fitted_on", {"products": 5}, "fitted_on.products is not a list"),
                            ("model_id", 7, "model_id")]:
        bad.write_text(json.dumps({**good, key: value}))
        with pytest.raises(ConfigError, match=f"wrong shape \\({why}"):
            Calibration.load(bad)


def test_a_head_is_saved_whole_or_not_at_all(tmp_path, monkeypatch):
    """A failed write (a full disk, a crash) leaves the old head and no temporary file."""
    path = tmp_path / "models" / "head.json"
    old = fit([signals(0.8), signals(0.1)], ["core", "one_off"])
    old.save(path)
    before = path.read_bytes()
    new = fit([signals(0.8), signals(0.1), signals(0.5)], ["core", "one_off", "one_off"])
    assert new.dumps() != old.dumps()

    def full_disk(self, text, *args, **kwargs):  # half the text goes out, then the disk is full
        with open(self, "w", encoding="utf-8") as handle:
            handle.write(text[:len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        new.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["head.json"]
    path.chmod(0o600)  # a head kept private stays private; a link is followed, not replaced
    link = tmp_path / "head-link.json"
    link.symlink_to(path)
    new.save(link)
    assert path.read_text() == new.dumps() and link.is_symlink()
    assert path.stat().st_mode & 0o777 == 0o600
    assert Calibration.load(path).weights == new.weights


def test_head_for_follows_the_positioning_file(tmp_path, example_config):
    text = example_config.read_text()
    (tmp_path / "scopeguard.yml").write_text(text + "calibration: cal.json\n")
    head = fit([signals(0.8), signals(0.1)], ["core", "one_off"])
    head.save(tmp_path / "cal.json")
    p = load_positioning(tmp_path / "scopeguard.yml")
    assert head_for(p, "any-model").name == "calibration:cal.json"
    (tmp_path / "scopeguard.yml").write_text(text + "calibration: none\n")
    assert head_for(load_positioning(tmp_path / "scopeguard.yml"), "any-model") is None


def test_eval_and_calibrate_cli(runner, tmp_path, example_config, example_backlog):
    """The harness end to end on the example product's decisions (hashing embedder)."""
    common = ["--db", str(tmp_path / "c.db"), "--model", "hashing"]
    out = tmp_path / "report.json"
    result = runner.invoke(cli, ["eval", "--requests", str(example_backlog), "-c",
                                 str(example_config), "--json", str(out), *common])
    assert result.exit_code == 0, result.output
    for method in ("majority class", "tfidf + rules", "tfidf + calibrated head",
                   "model + rules", "model + calibrated head"):
        assert method in result.output
    assert "protocol: kfold" in result.output and "confusion" in result.output
    # what it is doing, on stderr (a label a step when stderr is not a terminal); -q: quiet
    assert "with the model" in result.stderr and "TF-IDF" in result.stderr
    assert "with the model" not in result.stdout
    quiet = runner.invoke(cli, ["eval", "--requests", str(example_backlog), "-c",
                                str(example_config), "-q", *common])
    assert quiet.exit_code == 0 and "with the model" not in quiet.stderr
    assert "confusion" in quiet.stdout
    report = json.loads(out.read_text())
    preds = report["predictions"]["model + rules"]
    assert len(preds) == report["n"] >= 60 and set(preds.values()) <= {
        "core", "generalizable", "one_off"}
    cal = tmp_path / "cal.json"
    result = runner.invoke(cli, ["calibrate", "--labels", str(example_backlog), "-c",
                                 str(example_config), "--out", str(cal), *common])
    assert result.exit_code == 0, result.output
    assert "classifying" in result.stderr and "classifying" not in result.stdout
    data = json.loads(cal.read_text())
    assert data["model_id"] == "hashing-512" and data["fitted_on"]["n"] >= 60
    assert np.array(data["weights"]).shape == (3, len(data["features"]))
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + f"calibration: {cal}\n")
    result = runner.invoke(cli, ["classify", "-c", str(config), "-t", "Reminders by WhatsApp",
                                 "--format", "json", *common])
    verdict = json.loads(result.output)
    assert verdict["decided_by"] in ("calibration:cal.json", "rules")
    assert verdict["rule"] in ("calibrated", "served", "non_goal")


def test_calibrated_predictions_keep_the_products_own_rules(runner, tmp_path, example_config,
                                                          example_backlog):
    """A product whose thresholds call everything served: the calibrated head decides only
    fit, after the owner's rules, so its predictions are one-off too."""
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + "\nthresholds:\n  served: 0.0\n")
    out = tmp_path / "report.json"
    result = runner.invoke(cli, ["eval", "--requests", str(example_backlog), "-c", str(config),
                                 "--json", str(out), "--db", str(tmp_path / "c.db"),
                                 "--model", "hashing"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(out.read_text())["predictions"]
    for method in ("model + rules", "model + calibrated head", "tfidf + calibrated head"):
        assert set(predictions[method].values()) == {"one_off"}, method


def test_bad_evaluation_input_exits_2_naming_the_fix(runner, tmp_path, example_config):
    """One label only, leave-products-out over one product, a product file that is not
    UTF-8, a key given twice or not a mapping, a NaN or infinite L2, a head of NaNs: each
    a clear error (exit 2), never a traceback."""
    common = ["--model", "hashing", "--db", str(tmp_path / "c.db")]
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": "1", "title": "a", "label": "core"}\n'
                   '{"id": "2", "title": "b", "label": "core"}\n')
    two = tmp_path / "two.jsonl"
    two.write_text('{"id": "1", "title": "a", "label": "core"}\n'
                   '{"id": "2", "title": "b", "label": "one_off"}\n')
    products = tmp_path / "products"
    products.mkdir()
    cases = [(["eval", "--requests", str(one), "-c", str(example_config)], "one label"),
             (["eval", "--requests", str(two), "-c", str(example_config), "--protocol",
               "lopo"], "two or more products"),
             (["eval", "--requests", str(two), "--products", str(products)], "not UTF-8"),
             (["calibrate", "--labels", str(two), "-c", str(example_config), "--l2", "nan"],
              "not a number"),
             (["calibrate", "--labels", str(two), "-c", str(example_config), "--l2", "inf"],
              "range")]
    for args, says in cases:
        (products / "p.yml").write_bytes(b"product: caf\xe9\n")
        result = runner.invoke(cli, [*args, *common])
        assert result.exit_code == 2, (args, result.output)
        assert says.lower() in result.output.lower() or "utf-8" in result.output.lower(), \
            (args, result.output)
        assert "Traceback" not in result.output
    for text, says in (("features: [a]\nfeatures: [b]\n", "appears twice"),
                       ("- a list\n", "not a product file")):
        (products / "p.yml").write_text(text)
        result = runner.invoke(cli, ["eval", "--requests", str(two), "--products",
                                     str(products), *common])
        assert result.exit_code == 2 and says in result.output, result.output
    head = tmp_path / "nan.json"
    head.write_text(json.dumps({"weights": [[float("nan")]] * 2, "bias": [0, 0], "mean": [0],
                                "scale": [1], "features": ["fit"],
                                "classes": ["core", "one_off"]}))
    with pytest.raises(ConfigError, match="not finite"):
        Calibration.load(head)


def test_calibrate_refuses_a_single_label(runner, tmp_path, example_config):
    path = tmp_path / "l.jsonl"
    path.write_text('{"id": "1", "title": "a", "label": "core"}\n'
                    '{"id": "2", "title": "b", "label": "core"}\n')
    result = runner.invoke(cli, ["calibrate", "--labels", str(path), "-c", str(example_config),
                                 "--model", "hashing", "--db", str(tmp_path / "c.db")])
    assert result.exit_code == 2 and "same label" in result.stderr


def test_shipped_calibration_matches_its_model_card():
    """models/default-calibration.json is for the bundled model and beat the majority class
    when products were left out (the figures the model card and README quote); its
    certainty table was measured on products it was not fitted on."""
    from importlib import resources

    from scopeguard.embed import DEFAULT_MODEL

    path = resources.files("scopeguard.models") / "default-calibration.json"
    cal = Calibration.load(path)
    fitted = cal.fitted_on
    assert cal.model_id == DEFAULT_MODEL and fitted["protocol"] == "lopo"
    assert fitted["n"] == 238 and len(fitted["products"]) == 10
    cv, majority = fitted["cross_validated"], fitted["majority_class"]
    assert cv["accuracy"] > majority["accuracy"] and cv["macro_f1"] > 2 * majority["macro_f1"]
    card = (resources.files("scopeguard.models") / "MODEL_CARD.md").read_text()
    assert f"{cv['accuracy']:.3f}" in card and f"{cv['macro_f1']:.3f}" in card
    measured = fitted["certainty_measured_on"]
    assert cal.certainty and not set(measured["products"]) & set(fitted["products"])
    assert f"{measured['n']:,} requests of the {len(measured['products'])}" in card


def test_risk_coverage_keeps_the_most_confident_share():
    from scopeguard.evaluate import risk_coverage

    rows = risk_coverage([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05],
                         [True, True, True, False, True, False, False, True, False, False],
                         coverages=(1.0, 0.5, 0.2))
    assert rows == [(1.0, 0.5, 10), (0.5, 0.8, 5), (0.2, 1.0, 2)]
    assert risk_coverage([], [], coverages=(1.0,)) == [(1.0, 0.0, 0)]


def test_head_for_refuses_a_head_of_another_named_model_and_takes_path_models(tmp_path,
                                                                             example_config):
    """A head names the model it was fitted for: another named model is refused; a model in
    a directory is named by a path that differs between machines, so it is taken."""
    from scopeguard.calibration import head_for, same_model
    from scopeguard.positioning import load_positioning

    shipped = Calibration.load(Path(__file__).parents[1] / "models" / "default-calibration.json")
    shipped.save(tmp_path / "head.json")
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + "calibration: head.json\n")
    positioning = load_positioning(config)
    assert head_for(positioning, "sentence-transformers/all-MiniLM-L6-v2#int8") is not None
    with pytest.raises(ConfigError, match="was fitted for the model sentence-transformers/"
                                          "all-MiniLM-L6-v2, and this run embeds with "
                                          "hashing-512"):
        head_for(positioning, "hashing-512")
    assert head_for(positioning, "") is not None  # no model loaded (check --fast)
    assert same_model("path:/home/me/model", "path:/ci/checkout/model#w0123456789ab")
    assert same_model("path:/home/me/model", "hashing-512")  # a path names nothing portable
    assert not same_model("hashing-512", "sentence-transformers/all-MiniLM-L6-v2")
