"""Property-based fuzzing of every edge parser (issue 15), with Hypothesis.

What must hold for any input: no uncaught exception (only scopeguard's own errors, which
say what to fix); the service answers only 2xx, 4xx or 503, and a rejected body leaves
nothing in the queue; the CLI exits 0, 1 or 2 with a message, never with a traceback.

CI runs a fixed number of examples from a fixed seed (the "ci" profile: derandomized, so
a run is reproducible and fits .ci/run's budget); ``make fuzz`` runs the "long" profile.
"""

from __future__ import annotations

import json
import math
import os
import string

import pytest
from fake_jira import FakeJira, ServiceProcess
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scopeguard.integrations.github.webhook import BadGitHubWebhook
from scopeguard.integrations.github.webhook import ignore_reason as github_ignore
from scopeguard.integrations.github.webhook import parse as parse_github
from scopeguard.integrations.jira.errors import retry_after
from scopeguard.integrations.jira.webhook import BadWebhook, ignore_reason, parse_webhook

from scopeguard.backlog import read_backlog
from scopeguard.clean import clean_text, prepare
from scopeguard.errors import ScopeguardError
from scopeguard.positioning import Filters, load_positioning

settings.register_profile("ci", max_examples=40, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SECRET = "whsec-fuzz-0a1b2c3d4e5f6a7b"
GH_SECRET = "gh-whsec-fuzz-9a8b7c6d5e4f"
PAT = "pat-fuzz-0123456789abcdef"

# --- strategies --------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
                    # lone and paired surrogates: what JSON's "\ud83d" escapes decode to
                    st.text(st.characters(categories=["Cs", "Ll"]), max_size=6))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20)
KEYS = ["issue", "fields", "project", "key", "issuetype", "name", "changelog", "items",
        "webhookEvent", "issue_event_type_name", "user", "summary", "description", "labels",
        "number", "repository", "full_name", "action", "sender", "login", "type", "label",
        "pull_request", "comment", "body", "title"]
# Shaped like the real payloads, with any value anywhere: what a confused sender posts.
shaped = st.recursive(
    scalars | st.sampled_from(["jira:issue_created", "jira:issue_updated", "PAW-1",
                               "acme/pawtrack", "issues", "opened", "labeled", "Bot"]),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=6)),
    max_leaves=25)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"issue":' * n + b"1" + b"}" * n))
header_text = st.text(st.characters(codec="latin-1"), max_size=40)
header_maps = st.dictionaries(
    st.sampled_from(["x-atlassian-webhook-identifier", "x-scopeguard-delivery",
                     "x-github-event", "x-github-delivery", "content-type"]),
    header_text | st.sampled_from(["issues", "ping", "issue_comment"]), max_size=4)


# --- pure parsers ---------------------------------------------------------------------------------


@given(body=bodies, headers=header_maps)
def test_jira_webhook_parser_never_crashes(positioning, body, headers):
    try:
        hook = parse_webhook(body, headers)
    except BadWebhook as exc:
        assert "Fix:" in str(exc)
        return
    assert isinstance(ignore_reason(hook, positioning, "customfield_10010"), str)


@given(body=bodies, headers=header_maps)
def test_github_webhook_parser_never_crashes(body, headers):
    try:
        delivery = parse_github(body, headers)
    except BadGitHubWebhook as exc:
        assert "Fix:" in str(exc)
        return
    assert delivery.delivery_id.startswith("github:")
    reason = github_ignore(delivery, ["acme/pawtrack"], ["scope: core"], Filters())
    assert isinstance(reason, str)


@given(value=st.one_of(st.text(max_size=40), st.sampled_from([
    "inf", "-inf", "nan", "1e400", "-1", "0", "120", "  7 ", "Wed, 21 Oct 2015 07:28:00 GMT",
    "Wed, 21 Oct 9999 07:28:00 GMT", "Fri, 31 Feb 2025 25:61:61 GMT",
    "\u00b2", "\u0663", "1\u00b2"])))  # Unicode digits that str.isdigit() accepts (found)
def test_retry_after_is_none_or_a_finite_wait(value):
    seconds = retry_after({"Retry-After": value}, now=1_700_000_000.0)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(text=st.one_of(st.text(max_size=400), st.lists(st.sampled_from([
    "{code}", "{code:java}", "{noformat}", "{quote}", "h2. ", "bq. ", "!a.png!", "[x|http://y]",
    "[~u]", "<!--", "-->", "```", "~~~", "### ", "> ", "**", "- [x] ", "{color:red}", "\r\n",
    "word ", "\n"]), max_size=40).map("".join)))
def test_text_cleaning_never_crashes(text):
    cleaned = clean_text(text)
    assert isinstance(cleaned, str)
    assert "{code" not in cleaned and "<!--" not in cleaned
    document = prepare("title", text)
    assert document.chunks and all(isinstance(c, str) for c in document.chunks)


# --- files ----------------------------------------------------------------------------------------

POSITIONING_KEYS = ["product", "category", "target_customer", "need", "main_value",
                    "alternative", "uniqueness", "statements", "features", "non_goals",
                    "thresholds", "filters", "labels", "customer", "jira", "name",
                    "description", "instead", "similar", "served", "skip_labels"]
yaml_values = st.recursive(
    scalars | st.sampled_from([".nan", ".inf", "~", "!!python/object:os.system", "*a", "&a x"]),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(POSITIONING_KEYS), inner,
                                            max_size=6)),
    max_leaves=25)


@given(document=st.one_of(
    yaml_values.map(lambda v: json.dumps(v)),  # JSON is YAML
    st.text(max_size=300),
    st.lists(st.sampled_from(["product: P", "category: For x, use P", "features:", "- a",
                              "  - b", "non_goals: [", "thresholds: {similar: .nan}",
                              "product: Q", "{", "- {name: x}", "  : :", "!!binary |",
                              "&a [*a]", "key: value"]), max_size=15).map("\n".join)))
def test_positioning_loader_raises_only_config_errors(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("pos") / "scopeguard.yml"
    path.write_bytes(document.encode("utf-8", errors="replace"))
    try:
        load_positioning(path)
    except ScopeguardError as exc:
        assert "Fix:" in str(exc) or "fix" in str(exc).lower()


rows = st.dictionaries(st.sampled_from(["id", "title", "body", "labels", "customer",
                                        "author", "label", "created_at", "extra"]),
                       json_values, max_size=6)


@given(lines=st.lists(st.one_of(rows.map(json.dumps), st.text(max_size=60),
                                st.just("{" * 5000)), max_size=6),
       suffix=st.sampled_from([".jsonl", ".json", ".csv"]),
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-8-sig"]))
def test_backlog_reader_raises_only_input_errors(tmp_path_factory, lines, suffix, encoding):
    path = tmp_path_factory.mktemp("backlog") / f"backlog{suffix}"
    text = "\n".join(lines)
    if suffix == ".csv":
        text = "id,title,body,labels\n" + text
    path.write_bytes(text.encode(encoding, errors="replace"))
    try:
        requests = read_backlog(path)
    except ScopeguardError as exc:
        assert "Fix:" in str(exc) or "fix" in str(exc).lower() or "expected" in str(exc)
        return
    assert all(r.title or r.body for r in requests)


@given(content=st.one_of(rows.map(json.dumps), st.text(max_size=200), st.binary(max_size=100),
                         st.integers(1, 5000).map(lambda n: "{" + '"a":[' * n)))
def test_classify_file_exits_0_or_2_with_a_message(runner, example_config, tmp_path_factory,
                                                   content):
    from scopeguard.cli import cli

    folder = tmp_path_factory.mktemp("req")
    path = folder / "request.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = runner.invoke(cli, ["classify", "--config", str(example_config), "--db",
                                 str(folder / "c.db"), "--model", "hashing", "--file",
                                 str(path), "--format", "json"])
    assert result.exit_code in (0, 2), (result.output, result.exception)
    if result.exit_code == 2:
        assert "Error:" in result.output and "Traceback" not in result.output
    else:
        assert json.loads(result.output)["label"] in ("core", "generalizable", "one_off")


# --- the service over HTTP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jira():
    with FakeJira(flavour="server", pat=PAT) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory, jira, example_config):
    process = ServiceProcess(tmp_path_factory.mktemp("fuzz"), jira, example_config, {
        "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET,
        "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": GH_SECRET, "GITHUB_TOKEN": "ghp_fuzz0123456789",
        "GITHUB_API_URL": "http://127.0.0.1:9", "SCOPEGUARD_GITHUB_THROTTLE": "0"})
    process.start(ready=False)  # GitHub unreachable: /healthz says so, webhooks are taken
    process.wait(lambda: process.get("/healthz").json()["status"] != "loading", 90,
                 "the worker to load")
    yield process
    process.stop()


delivery_ids = st.text(string.ascii_letters + string.digits + "-", min_size=8, max_size=24)


@settings(max_examples=int(os.environ.get("SCOPEGUARD_FUZZ_HTTP", "25")))
@given(body=bodies, headers=header_maps, route=st.sampled_from(["jira", "github"]),
       sign=st.booleans(), delivery=delivery_ids)
def test_the_service_answers_2xx_4xx_or_503_and_queues_nothing_it_rejects(
        service, body, headers, route, sign, delivery):
    assume(not any(k in headers for k in ("x-atlassian-webhook-identifier",
                                           "x-github-delivery")))
    safe = {k: v for k, v in headers.items()
            if all(32 <= ord(c) < 127 for c in v) and k != "content-type"}
    if route == "jira":
        answer = service.post(body, delivery=f"fz-{delivery}", sign=sign, headers=safe)
        stored = f"fz-{delivery}"
    else:
        answer = service.post_github(body, event=safe.get("x-github-event") or "issues",
                                     delivery=f"fz-{delivery}", sign=sign)
        stored = f"github:fz-{delivery}"
    assert answer.status_code < 300 or 400 <= answer.status_code < 500 or \
        answer.status_code == 503, (answer.status_code, answer.text)
    assert "Traceback" not in answer.text
    if answer.status_code >= 400:
        assert stored not in service.events()
        assert answer.json().get("error")
