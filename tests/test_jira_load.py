"""Crash safety under load: 1,100 webhooks to a real ``scopeguard serve`` process, a SIGKILL
half-way through, a restart on the same queue file; then no event is lost and no issue
gets a second comment. Loopback only, bounded (about 20 s on two cores)."""

from __future__ import annotations

import random
import re
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
from fake_jira import FakeJira, ServiceProcess, issue_event
from scopeguard.integrations.service.auth import sign

from scopeguard import render

SECRET = "whsec-load-5c1d7e9a3b"
N_ISSUES = 400
SCOPE_LABELS = {"scope:core": "core", "scope:generalizable": "generalizable",
                "scope:one-off": "one_off"}
ASKS = ["Send reminders by WhatsApp", "Add a waitlist for cancelled slots",
        "Book recurring booster visits", "Sync with our in-house lab system",
        "Export the vet rota to our accounting software", "Show no-show statistics per vet",
        "Offer the booking widget in Welsh", "Publish a calendar feed for Outlook"]


def deliveries() -> list[tuple[str, dict]]:
    """A created and an updated event per issue, plus resends of 300 of them: 1,100."""
    created = [(f"created-{i}", issue_event(f"LOAD-{i}")) for i in range(N_ISSUES)]
    updated = [(f"updated-{i}", issue_event(f"LOAD-{i}", "jira:issue_updated",
                                            changed=("description",)))
               for i in range(N_ISSUES)]
    rng = random.Random(6)
    resent = rng.sample(created, 200) + rng.sample(updated, 100)
    later = updated + resent
    rng.shuffle(later)
    return created + later


class Sender:
    """Posts signed webhooks from 8 threads; a webhook that got no 2xx is kept to resend,
    as Jira does. With several services (replicas), each delivery goes to one of them,
    spread by its id."""

    def __init__(self, *services: ServiceProcess) -> None:
        self.services = list(services)
        self.accepted: dict[str, int] = {}
        self.unsent: list[tuple[str, dict]] = []
        self.refused: list[int] = []  # the status of each refusal (0: no answer)
        self.retry_after: list[str] = []
        self.lock = threading.Lock()
        self.local = threading.local()
        self.clients: list[httpx.Client] = []

    def send(self, item: tuple[str, dict]) -> None:
        import json

        delivery, payload = item
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = httpx.Client(timeout=30)
            with self.lock:
                self.clients.append(client)
        body = json.dumps(payload).encode()
        service = self.services[zlib.crc32(delivery.encode()) % len(self.services)]
        response = None
        try:
            response = client.post(service.url + "/webhooks/jira", content=body, headers={
                "X-Hub-Signature": sign(SECRET, body), "X-Atlassian-Webhook-Identifier": delivery,
                "Content-Type": "application/json"})
            ok = response.status_code in (200, 202)
        except httpx.TransportError:
            ok = False
        with self.lock:
            if ok:
                self.accepted[delivery] = response.status_code
            else:
                self.unsent.append(item)
                self.refused.append(response.status_code if response is not None else 0)
                self.retry_after.append(response.headers.get("Retry-After", "") if response
                                        is not None else "")

    def send_all(self, items: list[tuple[str, dict]]) -> None:
        self.local = threading.local()  # fresh threads, fresh clients
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self.send, items))
        for client in self.clients:
            client.close()
        self.clients.clear()


def test_no_loss_and_no_duplicate_comments_across_a_sigkill(tmp_path, example_config):
    with FakeJira(flavour="server", pat="pat-load") as jira:
        for i in range(N_ISSUES):
            ask = ASKS[i % len(ASKS)]
            jira.add_issue(f"LOAD-{i}", f"{ask} ({i})",
                           f"{ask}, please. Clinic: Clinic {i % 37}. Request {i}.")
        service = ServiceProcess(tmp_path, jira, example_config, {
            "SCOPEGUARD_MODEL": "hashing", "SCOPEGUARD_WEBHOOK_SECRET": SECRET,
            "SCOPEGUARD_RETRY_BASE": "0.2"}, args=("--workers", "4"))
        items = deliveries()
        assert len(items) >= 1000
        half = len(items) // 2
        sender = Sender(service)
        try:
            service.start()
            sender.send_all(items[:half])
            service.wait(lambda: sum(map(len, jira.comments.values())) >= 50,
                         what="processing to be under way")
            # SIGKILL while the second half is arriving and the queue is still full.
            killer = threading.Timer(0.3, service.kill)
            killer.start()
            sender.send_all(items[half:])
            killer.join()
            states = [e["state"] for e in service.events().values()]
            assert states.count("queued") + states.count("leased") > 0  # work was cut off
            assert sender.unsent  # and webhooks were refused while it was down

            service.start()  # same queue file; a new port
            unsent, sender.unsent = sender.unsent, []
            sender.send_all(unsent)
            assert not sender.unsent
            service.wait_idle(timeout=90)
        finally:
            service.stop()

        events = service.events()
        unique = {d for d, _ in items}
        assert set(sender.accepted) == unique  # every webhook was eventually answered 2xx...
        assert {d for d, e in events.items() if e["state"] == "done"} == unique  # ...and done
        restart = re.findall(r"(\d+) waiting \((\d+) taken back", service.log_text())[-1]
        assert int(restart[0]) > 0  # the restarted process picked up the queue it was left
        for i in range(N_ISSUES):
            key = f"LOAD-{i}"
            texts = jira.comment_texts(key)
            assert len(texts) == 1, (key, texts)  # no duplicate comments
            scope = [label for label in jira.labels(key) if label in SCOPE_LABELS]
            assert len(scope) == 1, (key, jira.labels(key))
            assert render.LABEL_MARKER.search(texts[0]).group(1) == SCOPE_LABELS[scope[0]]
        assert len(jira.calls("POST", "/comment")) == N_ISSUES  # never posted twice
