import json
import re

import pytest

from scopeguard.errors import ConfigError
from scopeguard.positioning import find_positioning, load_positioning, parse_positioning, schema

MINIMAL = {
    "product": "Tool",
    "category": "For finding files, use Tool",
    "target_customer": "Developers who search large source trees from the terminal",
    "need": "find files quickly",
    "main_value": "results in milliseconds",
    "features": ["Regular expression search", {"name": "Colours", "description": "by type"}],
}


def write(tmp_path, text, name="scopeguard.yml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_example_loads(positioning):
    assert positioning.product == "Pawtrack"
    assert len(positioning.features) == 10
    assert positioning.non_goals[0].instead.startswith("Export appointments")
    assert positioning.customer.source == "field" and positioning.customer.field == "Clinic"
    kinds = [k for k, _ in positioning.positioning_statements()]
    assert kinds[:4] == ["category", "target customer", "need", "main value"]


def test_plain_string_features_and_defaults():
    p = parse_positioning(MINIMAL)
    assert [f.name for f in p.features] == ["Regular expression search", "Colours"]
    assert p.features[1].text == "Colours: by type"
    assert p.labels["one_off"] == "scope: one-off"
    assert p.customer.source == "author"


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, "product: X\nnon_goal: []\n")
    with pytest.raises(ConfigError) as err:
        load_positioning(path)
    msg = str(err.value)
    assert str(path) in msg and "non_goal" in msg and "did you mean 'non_goals'" in msg


def test_missing_required_key(tmp_path):
    data = dict(MINIMAL)
    del data["category"]
    with pytest.raises(ConfigError) as err:
        parse_positioning(data, source="p.yml")
    assert err.value.key == "category" and "missing" in str(err.value)
    assert str(err.value).startswith("p.yml: category:")


def test_customer_need_and_value_may_be_left_empty_for_check_to_flag():
    """Docs rarely state them (a file drafted from docs leaves them empty): the file
    loads, and `check` says what each one buys (tests/test_draft.py)."""
    data = {k: v for k, v in MINIMAL.items() if k not in ("target_customer", "need")}
    p = parse_positioning({**data, "main_value": ""}, source="p.yml")
    assert (p.target_customer, p.need, p.main_value) == ("", "", "")


def test_wrong_type_nested(tmp_path):
    data = {**MINIMAL, "features": [{"name": "A", "description": ["not", "text"]}]}
    with pytest.raises(ConfigError) as err:
        parse_positioning(data, source="p.yml")
    assert "features[0].description" in str(err.value)
    assert "expected text, got a list" in str(err.value)


def test_threshold_out_of_range_and_bad_enum():
    with pytest.raises(ConfigError, match=r"thresholds.core_fit: 3 is out of range"):
        parse_positioning({**MINIMAL, "thresholds": {"core_fit": 3}})
    with pytest.raises(ConfigError, match=r"customer.source: .*'email'.* not allowed"):
        parse_positioning({**MINIMAL, "customer": {"source": "email"}})


def test_field_source_needs_field_name():
    with pytest.raises(ConfigError, match="customer.field"):
        parse_positioning({**MINIMAL, "customer": {"source": "field"}})


def test_yaml_syntax_error_reports_line(tmp_path):
    path = write(tmp_path, "product: X\nfeatures:\n  - a\n - b\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 4"):
        load_positioning(path)


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="is empty"):
        load_positioning(write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_positioning(tmp_path / "nope.yml")


def test_key_with_no_value_is_absent():
    p = parse_positioning({**MINIMAL, "alternative": None, "statements": None})
    assert p.alternative == "" and p.statements == ()


def test_a_nested_key_with_no_value_is_absent_too(tmp_path, example_config):
    """'require_labels:' or 'instead:' with nothing after it, at any depth: as if not
    written (each crashed a command with a TypeError), through check and classify."""
    from scopeguard.backlog import Request
    from scopeguard.embed import HashingEmbedder
    from scopeguard.engine import Scopeguard

    p = parse_positioning({
        **MINIMAL, "features": [{"name": "Colours", "description": None}],
        "non_goals": [{"name": "Billing", "instead": None}],
        "filters": {"require_labels": None, "skip_bots": None},
        "history": {"accepted_labels": None}, "jira": {"projects": None, "issue_types": None},
        "customer": {"source": "label", "label_prefix": None, "field": None},
        "thresholds": {"min_customers": None}, "ideal_customer": {"traits": None}})
    assert p.features[0].description == "" and p.non_goals[0].instead == ""
    assert p.filters == parse_positioning(MINIMAL).filters and p.jira.projects == ()
    assert p.customer.label_prefix == parse_positioning(MINIMAL).customer.label_prefix
    assert p.thresholds == {} and p.history == {}
    with pytest.raises(ConfigError, match="features\\[0\\]"):  # an empty list item is not
        parse_positioning({**MINIMAL, "features": [None]})
    path = write(tmp_path, example_config.read_text() + "thresholds:\n  min_customers:\n"
                 "filters:\n  skip_bots:\n")
    verdict = Scopeguard(load_positioning(path), HashingEmbedder()).classify(
        Request(id="1", title="Send reminders by SMS", body="Clinic 4 asks."))
    assert verdict.label in ("core", "generalizable", "one_off")


def test_find_in_github_dir(tmp_path):
    path = write(tmp_path, "x: 1", name=".github/scopeguard.yml")
    assert find_positioning(tmp_path) == path
    with pytest.raises(ConfigError, match="no positioning file found"):
        find_positioning(tmp_path / ".github" / "sub")


def test_duplicate_label_names_refused():
    with pytest.raises(ConfigError, match="label names must differ"):
        parse_positioning({**MINIMAL, "labels": {"core": "x", "one_off": "x"}})


def test_published_schema_agrees_with_loader(example_config):
    """The JSON Schema we publish accepts the example and rejects what the loader rejects."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    data = yaml.safe_load(example_config.read_text())
    jsonschema.validate(data, schema())
    bad = {**MINIMAL, "colour": "red"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())
    with pytest.raises(ConfigError):
        parse_positioning(bad)
    json.dumps(schema())  # serialisable as published


def test_a_long_text_given_for_the_file_is_not_quoted_back(tmp_path):
    """A wrong file passed as the positioning file (a .env with a token) is described by
    its length: only a short value is quoted."""
    path = tmp_path / "dotenv"
    path.write_text("GITHUB_TOKEN=ghp_1234567890abcdefghijklmnopqrstuvwxyzAB\n")
    with pytest.raises(ConfigError) as err:
        load_positioning(path)
    assert "ghp_" not in str(err.value) and "a text of 55 characters" in str(err.value)
    path.write_text("product: [1]\ncategory: dark\n")
    with pytest.raises(ConfigError):
        load_positioning(path)


def test_the_needs_decision_threshold_is_set_in_the_file_as_documented():
    """README: 'Turn the gate off with thresholds: {certainty: 0}'. The schema refused the
    key as unknown, so no file could set it."""
    from scopeguard.rules import Rules

    for value in (0, 0.9):
        loaded = parse_positioning({**MINIMAL, "thresholds": {"certainty": value}})
        assert Rules.from_thresholds(loaded.thresholds).certainty == value
    with pytest.raises(ConfigError, match=r"thresholds.certainty: 2 is out of range"):
        parse_positioning({**MINIMAL, "thresholds": {"certainty": 2}})


def test_label_names_are_trimmed_and_kept_on_one_line():
    """'  scope: core  ' is the label 'scope: core' (the Action's label inputs were trimmed,
    the file's were not); a line break in a name is refused, naming the key."""
    p = parse_positioning({**MINIMAL, "labels": {"core": "  scope: core  "}})
    assert p.labels["core"] == "scope: core"
    with pytest.raises(ConfigError, match="labels.one_off: 'scope:\\\\none' has a line break"):
        parse_positioning({**MINIMAL, "labels": {"one_off": "scope:\none"}})
    for name in ("scope:\u2028core", "scope:\x85core", "scope:\u2029core"):  # Unicode breaks
        with pytest.raises(ConfigError, match="labels.core: .* line break or control"):
            parse_positioning({**MINIMAL, "labels": {"core": name}})


def test_a_value_of_the_wrong_type_gets_a_fix_that_says_what_to_change(tmp_path,
                                                                      example_config):
    """The fix was the schema's description alone ('Fix: What the product is for, ...'),
    and a date YAML read from 'product: 2024-01-01' was 'expected text, got the text'."""
    path = tmp_path / "scopeguard.yml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"got a list\. Fix: make the file a mapping"):
        load_positioning(path)
    text = example_config.read_text()
    path.write_text(re.sub(r"(?m)^product: .*$", "product: 2024-01-01", text))
    with pytest.raises(ConfigError, match=r"got the date or time 2024-01-01 \(YAML reads it "
                                          r"as one unless quoted\)\. Fix: quote it \(product: "
                                          r"\"2024-01-01\"\)"):
        load_positioning(path)
    path.write_text(re.sub(r"(?ms)^features:.*?(?=^\S)", "features: 3\n", text))
    with pytest.raises(ConfigError, match=r"Fix: make features a list \('- item' lines\); "
                                          r"features: What the product already does"):
        load_positioning(path)
