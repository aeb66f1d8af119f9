"""GitHub webhooks through ``scopeguard serve``: the real service as a uvicorn process, with no
Jira configured, takes signed ``issues`` deliveries over HTTP and writes the verdicts back to a
fake GitHub REST server (tests/fake_github.py) with the Action's flow."""

from __future__ import annotations

import json

import pytest
from fake_github import FakeGitHub
from fake_jira import ServiceProcess
from samples import BOOSTER, LAB
from scopeguard.integrations.github.app import GitHubAccess
from scopeguard.integrations.github.relabels import RELABELS_FILE
from scopeguard.integrations.github.webhook import ignore_reason, parse
from scopeguard.integrations.service.auth import verify_github as verify
from scopeguard.integrations.service.settings import ServiceSettings

from scopeguard import render
from scopeguard.errors import ConfigError, InputError, ScopeguardError

REPO = "acme/pawtrack"
TOKEN = "ghs_WeBhOoK0123456789abcdefTOKEN"
SECRET = "gh-whsec-3b9d0c71e2"
NAMES = {"core": "scope: core", "generalizable": "scope: generalizable",
         "one_off": "scope: one-off"}


@pytest.fixture(scope="module")
def github(example_backlog):
    # A machine user's token: GET /user names the account whose comments are scopeguard's.
    with FakeGitHub(token=TOKEN, login="scopeguard-bot") as server:
        server.add_repo(REPO)
        server.add_repo("acme/other")
        rows = [json.loads(x) for x in example_backlog.read_text().splitlines() if x.strip()]
        for row in rows[:20]:
            server.add_issue(REPO, row["title"], row["body"], user=row["author"])
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory, github, example_config, session_db):
    """GitHub only (no JIRA_URL), the real model, one repository watched."""
    process = ServiceProcess(tmp_path_factory.mktemp("gh-serve"), None, example_config, {
        "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": github.base_url, "SCOPEGUARD_DB": str(session_db),
        "SCOPEGUARD_GITHUB_REPOSITORIES": REPO, "SCOPEGUARD_GITHUB_MAX_WAIT": "2",
        "SCOPEGUARD_GITHUB_RETRIES": "1", "SCOPEGUARD_GITHUB_THROTTLE": "0",
        "SCOPEGUARD_RETRY_BASE": "0.3"})
    yield process.start()
    process.stop()


def event(github: FakeGitHub, number: int, action: str = "opened", *, repo: str = REPO,
          label: str = "", sender: str = "octocat") -> dict:
    if action == "labeled" and label:  # the event follows the label's addition, as on GitHub
        github.add_issue_label(repo, number, label, actor=sender)
    payload = {"action": action, "issue": github.issue_payload(repo, number),
               "repository": {"full_name": repo}, "sender": {"login": sender, "type": "User"}}
    if label:
        payload["label"] = {"name": label, "color": "ededed"}
    return payload


def processed(service: ServiceProcess, delivery: str) -> dict:
    key = "github:" + delivery
    service.wait(lambda: (service.events().get(key) or {}).get("state") in ("done", "failed"),
                 what=f"delivery {delivery} to be processed")
    return service.events()[key]


# --- the service, end to end -------------------------------------------------------------------


@pytest.mark.model
def test_opened_then_edited_labels_and_keeps_one_comment(service, github):
    number = github.add_issue(REPO, *BOOSTER, user="riverside-vets")
    response = service.post_github(event(github, number), delivery="d-open")
    assert response.status_code == 202, response.text
    assert response.json() == {"status": "queued", "delivery": "github:d-open",
                               "issue": f"{REPO}#{number}"}
    row = processed(service, "d-open")
    assert row["state"] == "done", row
    assert github.issue_labels(REPO, number) == [NAMES["core"]]
    [comment] = github.comments(REPO, number)
    assert render.COMMENT_MARKER in comment["body"]
    assert render.marked_label(comment["body"]) == "core"

    github.set_issue(REPO, number, actor="riverside-vets", title=LAB[0], body=LAB[1])
    assert service.post_github(event(github, number, "edited"),
                               delivery="d-edit").status_code == 202
    assert processed(service, "d-edit")["state"] == "done"
    assert github.issue_labels(REPO, number) == [NAMES["one_off"]]  # replaced, not added
    [after] = github.comments(REPO, number)
    assert after["id"] == comment["id"] and render.marked_label(after["body"]) == "one_off"
    assert len(github.calls("POST", rf"/repos/{REPO}/issues/{number}/comments")) == 1


@pytest.mark.model
def test_redelivery_is_idempotent(service, github):
    number = github.add_issue(REPO, *LAB, user="harbour-lane")
    payload = event(github, number)
    first = service.post_github(payload, delivery="d-dup")
    again = service.post_github(payload, delivery="d-dup")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {"status": "duplicate", "delivery": "github:d-dup"}
    processed(service, "d-dup")
    assert len(github.comments(REPO, number)) == 1
    assert len(github.calls("POST", rf"/repos/{REPO}/issues/{number}/comments")) == 1


@pytest.mark.model
def test_unsigned_wrongly_signed_or_jira_signed_is_refused_and_not_queued(service, github):
    number = github.add_issue(REPO, *LAB)
    before = len(service.events())
    payload = event(github, number)
    unsigned = service.post_github(payload, delivery="d-unsigned", sign=False)
    wrong = service.post_github(payload, delivery="d-wrong", secret="not-the-secret")
    jira_style = service.post(payload, secret=SECRET, path="/webhooks/github",
                              headers={"X-GitHub-Event": "issues"})
    for response in (unsigned, wrong, jira_style):
        assert response.status_code == 401, response.text
        assert "SCOPEGUARD_GITHUB_WEBHOOK_SECRET" in response.json()["error"]
        assert SECRET not in response.text
    assert len(service.events()) == before
    assert github.comments(REPO, number) == []


@pytest.mark.model
def test_ping_other_events_and_other_repositories_are_not_queued(service, github):
    before = len(service.events())
    ping = service.post_github({"zen": "Keep it logically awesome.", "hook_id": 1},
                               event="ping", delivery="d-ping")
    assert ping.status_code == 200 and ping.json() == {"status": "pong"}
    star = service.post_github({"action": "created", "repository": {"full_name": REPO}},
                               event="star", delivery="d-star")
    closed = service.post_github(event(github, 1, "closed"), delivery="d-closed")
    other = github.add_issue("acme/other", *BOOSTER)
    elsewhere = service.post_github(event(github, other, repo="acme/other"), delivery="d-else")
    reasons = [r.json()["reason"] for r in (star, closed, elsewhere)]
    assert all(r.status_code == 202 for r in (star, closed, elsewhere))
    assert "star" in reasons[0] and "issues.closed" in reasons[1]
    assert "acme/other" in reasons[2] and "SCOPEGUARD_GITHUB_REPOSITORIES" in reasons[2]
    assert len(service.events()) == before


@pytest.mark.model
def test_malformed_deliveries_get_400_naming_the_fix(service):
    bad_json = service.post_github(b"{not json", delivery="d-bad")
    no_issue = service.post_github({"action": "opened", "repository": {"full_name": REPO}},
                                   delivery="d-noissue")
    no_event = service.post_github({"action": "opened"}, event="", delivery="d-noevent")
    assert [r.status_code for r in (bad_json, no_issue, no_event)] == [400, 400, 400]
    assert "application/json" in bad_json.json()["error"]
    assert "issue number" in no_issue.json()["error"]
    assert "X-GitHub-Event" in no_event.json()["error"]


@pytest.mark.model
def test_maintainer_relabel_is_recorded_and_stands(service, github):
    number = github.add_issue(REPO, *LAB, user="kingsway")
    assert service.post_github(event(github, number), delivery="d-rl-open").status_code == 202
    processed(service, "d-rl-open")
    [given] = github.issue_labels(REPO, number)
    predicted = next(k for k, name in NAMES.items() if name == given)
    human = "core" if predicted != "core" else "one_off"
    # A maintainer disagrees: GitHub sends `labeled` naming who set the label.
    github.set_issue(REPO, number, actor="maintainer", labels=[given, NAMES[human]])
    hook = event(github, number, "labeled", label=NAMES[human], sender="maintainer")
    assert service.post_github(hook, delivery="d-rl-label").status_code == 202
    assert processed(service, "d-rl-label")["state"] == "done"
    assert github.issue_labels(REPO, number) == [NAMES[human]]  # scopeguard's own went
    [row] = [json.loads(x) for x in github.file(REPO, RELABELS_FILE).splitlines()
             if json.loads(x)["id"] == f"#{number}"]
    assert (row["label"], row["predicted"], row["by"]) == (human, predicted, "maintainer")
    # A later edit never fights the maintainer's label.
    assert service.post_github(event(github, number, "edited"),
                               delivery="d-rl-edit").status_code == 202
    assert processed(service, "d-rl-edit")["state"] == "done"
    assert github.issue_labels(REPO, number) == [NAMES[human]]
    [comment] = github.comments(REPO, number)
    assert "Maintainer's label stands" in comment["body"]


@pytest.mark.model
def test_github_errors_are_retried_and_the_event_is_kept(service, github):
    number = github.add_issue(REPO, *BOOSTER, user="oakfield")
    # PyGithub's own retry fails too: the service's queue retries the event later.
    github.fail(502, times=3, method="GET", path=rf"/repos/{REPO}/issues/{number}")
    assert service.post_github(event(github, number), delivery="d-502").status_code == 202
    row = processed(service, "d-502")
    assert row["state"] == "done" and row["attempts"] >= 2, row
    assert github.issue_labels(REPO, number) == [NAMES["core"]]
    assert "retrying" in service.log_text()


@pytest.mark.model
def test_a_request_github_refuses_fails_at_once(service, github):
    number = github.add_issue(REPO, *BOOSTER, user="riverside-vets")
    github.fail(422, times=1, method="POST", path=rf"/repos/{REPO}/issues/{number}/comments",
                body={"message": "Validation Failed"})
    assert service.post_github(event(github, number), delivery="d-422").status_code == 202
    row = processed(service, "d-422")
    assert (row["state"], row["attempts"]) == ("failed", 1), row
    assert "422" in row["error"] and "Validation Failed" in row["error"]
    assert "Fix:" in row["error"] and "a scopeguard bug" in row["error"]


@pytest.mark.model
def test_healthz_metrics_and_jira_route_without_jira(service, github):
    number = github.add_issue(REPO, *BOOSTER, user="kingsway")
    assert service.post_github(event(github, number), delivery="d-metrics").status_code == 202
    assert processed(service, "d-metrics")["outcome"].startswith("core (")
    assert service.post_github(event(github, number), sign=False).status_code == 401
    health = service.get("/healthz").json()
    assert health["status"] == "ready" and health["jira"] is None and health["github"] is True
    jira = service.post({"issue": {"key": "PAW-1"}}, secret="x")
    assert jira.status_code == 404 and "JIRA_URL" in jira.json()["error"]
    metrics = service.metrics()
    assert metrics['scopeguard_webhooks_received_total{result="queued"}'] >= 1
    assert metrics['scopeguard_webhooks_rejected_total{reason="unauthorized"}'] >= 1
    assert metrics['scopeguard_events_processed_total{outcome="core"}'] >= 1


@pytest.mark.model
def test_scopeguards_own_label_coming_back_is_ignored(service, github):
    number = github.add_issue(REPO, *BOOSTER)
    hook = event(github, number, "labeled", label=NAMES["core"], sender="scopeguard[bot]")
    hook["sender"]["type"] = "Bot"
    response = service.post_github(hook, delivery="d-own-label")
    assert response.status_code == 202 and response.json()["status"] == "ignored"
    assert "not a maintainer" in response.json()["reason"]
    assert "github:d-own-label" not in service.events()


@pytest.mark.model
def test_secrets_never_in_logs_comments_or_responses(service, github):
    # Provoke the paths that handle credentials: a near-miss secret, GitHub refusing the token.
    number = github.add_issue(REPO, *BOOSTER, user="oakfield")
    assert service.post_github(event(github, number), delivery="d-near",
                               secret=SECRET[:-1]).status_code == 401
    github.token = "rotated-token"
    try:
        assert service.post_github(event(github, number), delivery="d-401").status_code == 202
        service.wait(lambda: "rejected the token" in service.log_text(),
                     what="the 401 from GitHub in the log")
    finally:
        github.token = TOKEN
    assert processed(service, "d-401")["state"] == "done"  # it waited for the token
    log = service.log_text()
    texts = [c["body"] for n in list(github.repos[REPO].issues)
             for c in github.comments(REPO, n)]
    for secret in (TOKEN, SECRET, SECRET[:-1]):
        assert secret not in log
        assert all(secret not in t for t in texts)
        assert all(secret not in r.text for r in service.responses)


# --- the parts, in-process ---------------------------------------------------------------------


def test_parse_and_ignore_rules():
    body = json.dumps({"action": "opened", "issue": {"number": 3, "title": "x"},
                       "repository": {"full_name": REPO}}).encode()
    hook = parse(body, {"x-github-event": "issues", "x-github-delivery": "abc"})
    assert (hook.delivery_id, hook.event, hook.key) == ("github:abc", "github:issues.opened",
                                                        f"{REPO}#3")
    assert ignore_reason(hook, []) == "" and ignore_reason(hook, [REPO.upper()]) == ""
    labeled = {"action": "labeled", "issue": {"number": 3}, "repository": {"full_name": REPO},
               "label": {"name": "Scope: Core"}, "sender": {"login": "x[bot]", "type": "Bot"}}
    by_bot = parse(json.dumps(labeled).encode(), {"x-github-event": "issues"})
    assert "set by a bot" in ignore_reason(by_bot, [], NAMES.values())
    assert ignore_reason(by_bot, [], ["bug"]) == ""  # another label: classify again
    labeled["sender"] = {"login": "carol", "type": "User"}
    by_person = parse(json.dumps(labeled).encode(), {"x-github-event": "issues"})
    assert ignore_reason(by_person, [], NAMES.values()) == ""  # a correction to record
    assert "not in" in ignore_reason(hook, ["acme/else"])
    # Without a delivery header the body's hash makes a retried delivery the same id.
    hashed = parse(body, {"x-github-event": "issues"}).delivery_id
    assert hashed.startswith("github:sha256:") and hashed == parse(
        body, {"x-github-event": "issues"}).delivery_id
    assert hashed != parse(body + b" ", {"x-github-event": "issues"}).delivery_id
    pr = json.dumps({"action": "opened", "issue": {"number": 4, "pull_request": {}},
                     "repository": {"full_name": REPO}}).encode()
    assert ignore_reason(parse(pr, {"x-github-event": "issues"}), []) == ""  # empty: an issue
    pr = pr.replace(b'"pull_request": {}', b'"pull_request": {"url": "u"}')
    assert "pull request" in ignore_reason(parse(pr, {"x-github-event": "issues"}), [])
    for bad in (b"[]", b'{"action": "opened", "issue": {"number": "7"}, '
                       b'"repository": {"full_name": "a/b"}}',
                b'{"action": "opened", "issue": {"number": 7}, '
                b'"repository": {"full_name": "no slash"}}'):
        with pytest.raises(InputError):
            parse(bad, {"x-github-event": "issues"})
    blank = parse(body, {"x-github-event": "issues", "x-github-delivery": "  "}).delivery_id
    assert blank.startswith("github:sha256:")
    with pytest.raises(InputError, match="200 characters"):
        parse(body, {"x-github-event": "issues", "x-github-delivery": "x" * 300})


def test_signature_is_checked_against_the_exact_body():
    from scopeguard.integrations.service.auth import sign

    body = b'{"action":"opened"}'
    good = {"x-hub-signature-256": sign(SECRET, body)}
    assert verify(good, body, SECRET) == ""
    assert verify({"x-hub-signature-256": sign(SECRET, body).upper().replace("SHA", "sha")},
                  body, SECRET) == ""  # hex case does not matter
    assert "does not match" in verify(good, body + b" ", SECRET)
    assert "does not match" in verify(good, body, SECRET + "x")
    assert "no X-Hub-Signature-256" in verify({"x-hub-signature": "sha256=00"}, body, SECRET)


def test_settings_and_access_errors_name_the_fix(tmp_path):
    settings = ServiceSettings.from_env({"SCOPEGUARD_GITHUB_WEBHOOK_SECRET": SECRET,
                                         "SCOPEGUARD_GITHUB_REPOSITORIES": " a/b, c/d ,"})
    assert settings.repositories == ["a/b", "c/d"] and SECRET not in repr(settings)
    assert SECRET in settings.secrets()
    with pytest.raises(ScopeguardError, match="SCOPEGUARD_GITHUB_WEBHOOK_SECRET"):
        ServiceSettings.from_env({})
    with pytest.raises(ConfigError, match="GITHUB_APP_PRIVATE_KEY"):
        GitHubAccess.from_env({"GITHUB_APP_ID": "12"})
    with pytest.raises(ConfigError, match="cannot read the key file"):
        GitHubAccess.from_env({"GITHUB_APP_ID": "12",
                               "GITHUB_APP_PRIVATE_KEY": str(tmp_path / "missing.pem")})
    access = GitHubAccess.from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": "http://x/api/"})
    assert access.api_url == "http://x/api" and TOKEN not in repr(access)
    assert access.token_for({}) == TOKEN
    with pytest.raises(ScopeguardError, match="GITHUB_TOKEN"):
        GitHubAccess.from_env({}).token_for({"installation": {"id": 1}})


@pytest.mark.parametrize("url", ["api.github.example.com", "https://", "ftp://ghe.example.com",
                                 "https://ghe.example.com:v3/api"])
def test_a_bad_github_api_url_stops_serve_at_start(url, runner, example_config, tmp_path):
    """Like the other settings: exit 2 naming GITHUB_API_URL and the fix, before anything
    starts (it used to fail every GitHub event instead)."""
    with pytest.raises(InputError, match="GITHUB_API_URL"):
        GitHubAccess.from_env({"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": url})
    from scopeguard.cli import cli

    result = runner.invoke(cli, ["serve", "-c", str(example_config), "--queue",
                                 str(tmp_path / "q.db")],
                           env={"SCOPEGUARD_GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": TOKEN,
                                "GITHUB_API_URL": url, "JIRA_URL": None})
    assert result.exit_code == 2, result.output
    assert "GITHUB_API_URL" in result.output and "https://HOST/api/v3" in result.output
    assert TOKEN not in result.output and not (tmp_path / "q.db").exists()


# --- a GitHub App: installation tokens ---------------------------------------------------------


def test_an_installation_token_is_masked_from_the_moment_it_is_issued(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from scopeguard.integrations.service.logs import mask_secrets

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "app.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with FakeGitHub(token=None, app=("4242", public.decode())) as github:
        access = GitHubAccess.from_env({"GITHUB_APP_ID": "4242", "GITHUB_API_URL":
                                        github.base_url,
                                        "GITHUB_APP_PRIVATE_KEY": str(tmp_path / "app.pem")})
        token = access.token_for({"installation": {"id": 77}})
    assert token in github.installation_tokens
    assert mask_secrets(f"GitHub said: token {token} expired") == "GitHub said: token *** expired"


def test_github_app_gets_an_installation_token_per_installation(tmp_path, example_config):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "app.pem").write_text(pem)
    with FakeGitHub(token="no-personal-token-works", app=("4242", public.decode())) as github:
        github.add_repo(REPO)
        first, second = (github.add_issue(REPO, *request) for request in (BOOSTER, LAB))
        process = ServiceProcess(tmp_path, None, example_config, {
            "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_APP_ID": "4242",
            "GITHUB_APP_PRIVATE_KEY": str(tmp_path / "app.pem"),
            "GITHUB_API_URL": github.base_url, "SCOPEGUARD_MODEL": "hashing",
            "SCOPEGUARD_GITHUB_THROTTLE": "0"})
        process.start()
        try:
            for n, delivery in ((first, "app-1"), (second, "app-2")):
                payload = {**event(github, n), "installation": {"id": 77}}
                assert process.post_github(payload, delivery=delivery).status_code == 202
                assert processed(process, delivery)["state"] == "done"
            orphan = process.post_github(event(github, first, "edited"), delivery="app-3")
            assert orphan.status_code == 202
            failed = processed(process, "app-3")
        finally:
            process.stop()
        log = process.log_text()
        assert len(github.calls("POST", "/app/installations/77/access_tokens")) == 1  # kept
        [token] = github.installation_tokens
        writes = github.calls("POST", rf"/repos/{REPO}/issues/\d+/comments")
        assert len(writes) == 2
        assert all(w.headers["authorization"].endswith(token) for w in writes)
        assert all(len(github.comments(REPO, n)) == 1 and github.issue_labels(REPO, n)
                   for n in (first, second))
        # An event that names no installation cannot get a token: it fails, naming the fix.
        assert failed["state"] == "failed" and "GITHUB_TOKEN" in failed["error"]
        for secret in (pem.splitlines()[1], token, SECRET):
            assert secret not in log


def test_the_github_flow_writes_nothing_once_the_worker_lost_its_lease(github, example_config,
                                                                        tmp_path):
    """The service's GitHub flow (the Action's, in a worker) confirms the worker still
    holds the event before its first write: a worker that stalled past its lease writes
    neither labels nor the comment nor a relabel record; one that holds it writes."""
    from scopeguard.integrations.github.webhook import handle
    from scopeguard.integrations.lease import LeaseLost, leased

    from scopeguard.embed import HashingEmbedder
    from scopeguard.engine import Scopeguard
    from scopeguard.positioning import load_positioning

    positioning = load_positioning(example_config)
    guard = Scopeguard(positioning, HashingEmbedder())
    access = GitHubAccess(api_url=github.base_url, token=TOKEN)
    number = github.add_issue(REPO, *LAB, user="ivy")
    before = len(github.writes())
    with leased(lambda: False), pytest.raises(LeaseLost, match="nothing written back"):
        handle(event(github, number), access=access, positioning=positioning, guard=guard,
               db=str(tmp_path / "c.db"))
    assert len(github.writes()) == before
    renewed = []
    with leased(lambda: renewed.append(1) or True):
        handle(event(github, number), access=access, positioning=positioning, guard=guard,
               db=str(tmp_path / "c.db"))
    assert renewed and len(github.writes()) > before


def test_a_token_github_repeats_is_masked_on_healthz_and_in_the_queue(tmp_path,
                                                                      example_config):
    """GitHub (or a proxy before it) answers 401 repeating the token: the unauthenticated
    /healthz error and the event's stored error keep the message, the token masked."""
    token = "ghp_RePeAtEd0123456789abcdefTOKEN"
    with FakeGitHub(token=token, login="scopeguard-bot") as github:
        github.add_repo(REPO)
        number = github.add_issue(REPO, *BOOSTER, user="oakfield")
        github.fail(401, times=1000, path="/user",
                    body={"message": f"Bad credentials (token {token} was revoked)"})
        process = ServiceProcess(tmp_path, None, example_config, {
            "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_TOKEN": token, "GITHUB_API_URL": github.base_url,
            "SCOPEGUARD_GITHUB_REPOSITORIES": REPO, "SCOPEGUARD_GITHUB_MAX_WAIT": "1",
            "SCOPEGUARD_GITHUB_RETRIES": "0", "SCOPEGUARD_GITHUB_THROTTLE": "0",
            "SCOPEGUARD_RETRY_BASE": "0.3"}).start(ready=False)  # its start check fails
        try:
            process.wait(lambda: process.get("/healthz").json()["status"] != "loading",
                         what="the worker to load")
            assert process.post_github(event(github, number),
                                       delivery="d-echo").status_code == 202
            process.wait(lambda: "Bad credentials" in process.get("/healthz").text,
                         what="the 401 on /healthz")
            health = process.get("/healthz")
            assert health.status_code == 503 and "token *** was revoked" in health.text
            process.wait(lambda: process.events()["github:d-echo"]["error"],
                         what="the event's error")
            stored = process.events()["github:d-echo"]["error"]
            assert "Bad credentials" in stored and token not in stored
            assert token not in process.log_text()
        finally:
            process.stop()


@pytest.mark.model
def test_a_wrong_github_login_costs_one_comment_posted_and_taken_back(github, example_config,
                                                                      tmp_path):
    """SCOPEGUARD_GITHUB_LOGIN naming another account than the token writes as: the first
    event's comment is taken back and the event fails naming the login to set; each later
    event used to post and delete one more comment. They now fail before any write."""
    from scopeguard.integrations.github.webhook import handle

    from scopeguard.embed import HashingEmbedder
    from scopeguard.engine import Scopeguard
    from scopeguard.positioning import load_positioning

    positioning = load_positioning(example_config)
    guard = Scopeguard(positioning, HashingEmbedder())
    access = GitHubAccess(api_url=github.base_url, token=TOKEN, login="someone-else")
    first, second = (github.add_issue(REPO, *LAB, user="ivy") for _ in range(2))
    before = len(github.writes())
    with pytest.raises(InputError, match="GitHub posts it as scopeguard-bot.*"
                                         "SCOPEGUARD_GITHUB_LOGIN"):
        handle(event(github, first), access=access, positioning=positioning, guard=guard,
               db=str(tmp_path / "c.db"))
    made = [(w.method, w.path.split("/issues/")[1].split("/")[0])
            for w in github.writes()[before:] if "/issues/" in w.path]
    assert made == [("POST", str(first)), ("DELETE", "comments")]  # nothing labelled
    assert github.comments(REPO, first) == []
    before = len(github.writes())
    with pytest.raises(InputError, match="GitHub posts it as scopeguard-bot"):
        handle(event(github, second), access=access, positioning=positioning, guard=guard,
               db=str(tmp_path / "c.db"))
    assert [w for w in github.writes()[before:] if "/issues/" in w.path] == []
    assert github.comments(REPO, second) == []
    # remembered for that kind of token only: an App's installations write as its bot
    access.app_id = "12345"
    assert access.login_for({"installation": {"id": 7}}, "ghs_installation") == "someone-else"
    assert list(access.wrong_login) == ["token"]
