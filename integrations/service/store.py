"""The issues the webhook service has seen, in its queue file: requests and vectors (demand),
what it wrote back to each (its comment, its label), and the labels people set instead,
which :func:`read_relabels` exports for ``scopeguard calibrate``.

Example::

    store = IssueStore(queue, model="all-MiniLM-L6-v2")
    backlog = store.similar(vector, threshold=0.62, exclude="PAW-12")
    store.remember(request, vector)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from scopeguard.backlog import Request, customer_key
from scopeguard.positioning import LABELS

from ..jira.writeback import UNKNOWN_BY
from .queue import SCHEMA_VERSION, EventQueue, QueueError
from .storage import is_postgres, redact


def request_to_json(request: Request) -> str:
    return json.dumps({"id": request.id, "title": request.title, "body": request.body,
                       "author": request.author, "customer": request.customer,
                       "created_at": request.created_at, "url": request.url,
                       "labels": list(request.labels), "org": request.org,
                       "extra": request.extra}, ensure_ascii=False)


def request_from_json(text: str) -> Request:
    data = json.loads(text)
    return Request(**{**data, "labels": tuple(data.get("labels") or ())})


@dataclass
class Seen:
    key: str
    comment_id: str
    applied: str
    human: str = ""  # the person's label recorded last, and who set it
    human_by: str = ""


class IssueStore:
    """The issues the service has classified: requests, vectors and write-back records.

    Demand is computed against these (the other requests the service has seen). The
    vectors stay in memory as one matrix, so finding the few similar requests of a new
    one is a matrix-vector product, not a re-embedding of the whole history per event.

    Args:
        queue: the queue whose SQLite file (or PostgreSQL database) also holds this table.
        model: the embedder's model id; vectors of another model are not used.
        shared: other processes write to the same file (worker processes): ``similar``
            first reads what they stored.
    """

    def __init__(self, queue: EventQueue, model: str, shared: bool = False) -> None:
        self.queue = queue
        self.model = model
        self.shared = shared
        self._lock = threading.Lock()
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._requests: list[Request] = []
        self._matrix = np.zeros((0, 0), np.float32)
        self.stale: list[Request] = []  # stored under another model: embed again
        self._synced = 0.0  # the newest updated_at read from the file
        self._stamps: dict[str, float] = {}  # updated_at of each row as read or written here
        conn = queue._conn()
        with queue._tx() as tx:
            tx.execute("CREATE INDEX IF NOT EXISTS issues_updated ON issues (updated_at)")
        for key, text, model_id, blob, updated in conn.execute(
                "SELECT key, request, model, vector, updated_at FROM issues ORDER BY "
                f"{queue.issue_order}"):
            request = request_from_json(text)
            self._synced, self._stamps[key] = max(self._synced, updated), updated
            if model_id == model and blob:
                self._put(key, request, np.frombuffer(blob, np.float32))
            else:
                self.stale.append(request)

    def refresh(self) -> int:
        """Read the issues other worker processes stored since the last read (each process
        keeps its own matrix; demand must count what any of them classified). Rows are
        re-read from a minute back: another process may commit a row stamped before the
        newest one seen here (its stamp is taken before it waits, up to 30 s, for the
        file's write lock). Only the keys and stamps of that minute are read; the rows
        themselves only where the stamp is new here."""
        conn = self.queue._conn()
        stamps = conn.execute("SELECT key, updated_at FROM issues WHERE updated_at > ? AND "
                              "model = ?", (self._synced - 60.0, self.model)).fetchall()
        changed = [key for key, at in stamps if self._stamps.get(key) != at]
        for at in range(0, len(changed), 500):
            batch = changed[at:at + 500]
            for key, text, blob, updated in conn.execute(
                    "SELECT key, request, vector, updated_at FROM issues WHERE model = ? AND "
                    f"key IN ({','.join('?' * len(batch))})", [self.model, *batch]).fetchall():
                self._synced, self._stamps[key] = max(self._synced, updated), updated
                if blob:
                    self._put(key, request_from_json(text), np.frombuffer(blob, np.float32))
        return len(changed)

    def __len__(self) -> int:
        return len(self._keys)

    def _put(self, key: str, request: Request, vector: np.ndarray) -> None:
        vector = np.asarray(vector, np.float32)
        with self._lock:
            if self._matrix.shape[1] != vector.shape[0]:  # first vector, or a new model
                self._keys, self._index, self._requests = [], {}, []
                self._matrix = np.zeros((64, vector.shape[0]), np.float32)
            if key in self._index:
                i = self._index[key]
                self._requests[i] = request
                self._matrix[i] = vector
                return
            n = len(self._keys)
            if n == self._matrix.shape[0]:  # grow by doubling: amortised O(1) per issue
                grown = np.zeros((2 * n, self._matrix.shape[1]), np.float32)
                grown[:n] = self._matrix
                self._matrix = grown
            self._matrix[n] = vector
            self._index[key] = n
            self._keys.append(key)
            self._requests.append(request)

    def similar(self, vector: np.ndarray, threshold: float, exclude: str = "",
                top: int = 10) -> list[Request]:
        """Stored requests whose cosine with ``vector`` is at least ``threshold``: the ``top``
        best, and the best one of every other customer.

        That is all a verdict reads of its neighbours (the closest few are shown, and
        demand counts distinct customers), so classifying against this short list gives
        the verdict the whole history would, without cleaning and scoring all of it.
        Customers are compared as ``classify`` does: customer, else author, else id, by
        ``customer_key`` (case, spacing and invisible characters aside); store requests
        with their customer resolved.
        """
        if self.shared:
            self.refresh()
        with self._lock:
            if not self._keys:
                return []
            sims = self._matrix[:len(self._keys)] @ np.asarray(vector, np.float32)
            hits = np.flatnonzero(sims >= threshold)
            ranked = [self._requests[i] for i in hits[np.argsort(-sims[hits])]
                      if self._keys[i] != exclude]
        out, customers = ranked[:top], set()
        for r in ranked:
            who = customer_key(r.asker)
            if who not in customers:
                customers.add(who)
                if r not in out[:top]:
                    out.append(r)
        return out

    def remember(self, request: Request, vector: np.ndarray) -> None:
        """Store (or replace) an issue's request and vector, keeping its write-back record."""
        self.remember_many([request], [vector])

    def remember_many(self, requests: Sequence[Request], vectors: Sequence[np.ndarray]) -> None:
        rows = [(r.id, request_to_json(r), self.model, np.asarray(v, np.float32).tobytes(),
                 self.queue.clock()) for r, v in zip(requests, vectors, strict=True)]
        with self.queue._tx() as conn:
            conn.executemany(
                "INSERT INTO issues (key, request, model, vector, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET request = excluded."
                "request, model = excluded.model, vector = excluded.vector, "
                "updated_at = excluded.updated_at", rows)
        for request, vector, row in zip(requests, vectors, rows, strict=True):
            self._put(request.id, request, vector)
            self._stamps[request.id] = row[4]

    def seen(self, key: str) -> Seen:
        row = self.queue._conn().execute(
            "SELECT comment_id, applied, human, human_by FROM issues WHERE key = ?",
            (key,)).fetchone()
        return Seen(key, *(row or ("", "", "", "")))

    def record_write_back(self, key: str, comment_id: str, applied: str, human: str = "", *,
                          predicted: str = "", human_key: str = "", asked: bool = False,
                          human_by: str = "") -> None:
        """What write-back left on the issue.

        ``human`` is a scope label a person set (the Jira label) and ``human_key`` its
        verdict label: a person's decision, next to scopeguard's ``predicted`` one (the
        verdict it had given when that decision came, kept while a person's label stands),
        that ``scopeguard relabels`` exports for ``scopeguard calibrate``. The time a person's
        label was first seen is kept while that label stands; whether it decided what
        scopeguard had asked (``asked``: its needs-decision label was on the issue then) is
        kept while a person's label (that one, or the one they change it to) stands.
        ``human_by`` names who set it ("" when unknown: kept from before for that label).
        """
        with self.queue._tx() as conn:
            # SET expressions read the row as it was, so `human` and `predicted` below are
            # the old ones. While a person's label stands, `predicted` stays what scopeguard
            # had given before that label came (the verdict the person answered), even if
            # the request is edited and classified differently since.
            conn.execute(
                "UPDATE issues SET comment_id = ?, applied = ?, predicted = CASE WHEN ? = '' "
                "THEN ? WHEN predicted != '' THEN predicted ELSE ? END, human_at = "
                "CASE WHEN ? = '' THEN NULL WHEN human = ? AND human_at IS NOT NULL "
                "THEN human_at ELSE ? END, asked = CASE WHEN ? = '' THEN 0 WHEN human != '' "
                "THEN asked ELSE ? END, human_by = CASE WHEN ? = '' THEN '' WHEN ? != '' "
                "THEN ? WHEN human = ? THEN human_by ELSE '' END, human = ?, human_key = ? "
                "WHERE key = ?",
                (comment_id, applied, human, predicted, predicted, human, human,
                 self.queue.clock(), human, int(asked), human, human_by, human_by, human,
                 human, human_key if human else "", key))

    def resolve_human_keys(self, label_names: Mapping[str, str]) -> int:
        """Fill in ``human_key`` where only the Jira label was recorded (files from before
        schema 1); ``label_names``: Jira label by verdict label. Returns the rows filled."""
        filled = 0
        with self.queue._tx() as conn:
            for key, name in label_names.items():
                filled += conn.execute(
                    "UPDATE issues SET human_key = ? WHERE human_key = '' AND human != '' "
                    "AND lower(human) = lower(?)", (key, name)).rowcount
        return filled


# --- relabels, for calibration -----------------------------------------------------------------

RELABEL_FIELDS = ("id", "title", "body", "author", "customer", "created_at", "url")


@dataclass
class Relabels:
    """The people's decisions a queue file holds, as rows of a labelled backlog."""

    rows: list[dict[str, str]]
    unresolved: list[str]  # issues whose person's label matched no label name at record time


def read_relabels(path: str | Path) -> Relabels:
    """The issues of a queue file on which a person's scope label stands, oldest first.

    Each row is a labelled backlog line for ``scopeguard calibrate --labels``: the request
    as the service last classified it (customer resolved by the positioning file), the
    person's ``label`` (core, generalizable or one_off), scopeguard's ``predicted`` one
    (the verdict the person answered: if the request was edited since and scopeguard now
    decides otherwise, its current verdict is in the comment, not here), and
    ``recorded_at`` (UTC), when the person's label was first seen. The file is opened
    read-only, so this works while ``scopeguard serve`` runs on it. ``path`` may be the
    PostgreSQL store's URL instead (``serve --store``).

    Example::

        for row in read_relabels("scopeguard-queue.db").rows:
            print(json.dumps(row))
    """
    if is_postgres(str(path)):
        return _relabels(_pg_relabels(str(path)))
    source = Path(path)
    fix = ("Fix: pass the --queue file that scopeguard serve uses (SCOPEGUARD_QUEUE; default "
           "scopeguard-queue.db).")
    if not source.is_file():
        raise QueueError(f"{redact(str(source))}: no such queue file. {fix}")
    try:
        conn = sqlite3.connect(source.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise QueueError(f"{source}: cannot open the queue file ({exc}). {fix}") from None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "issues" not in tables:
            raise QueueError(f"{source} is not a scopeguard serve queue file (no issues "
                             f"table). {fix}")
        if version < SCHEMA_VERSION:
            raise QueueError(
                f"{source} was written by an older scopeguard serve (queue schema {version}), "
                "whose records of people's labels this version cannot export as they are. "
                "Fix: start scopeguard serve (this version) on it once: it upgrades the file "
                "and fills the records in, then export again.")
        if version > SCHEMA_VERSION:
            raise QueueError(f"{source} was written by a newer scopeguard (queue schema "
                             f"{version}). Fix: upgrade scopeguard.")
        found = conn.execute(_RELABELLED).fetchall()
    except sqlite3.Error as exc:
        raise QueueError(f"{source}: cannot read the queue file ({exc}). {fix}") from None
    finally:
        conn.close()
    return _relabels(found)


_RELABELLED = ("SELECT key, request, human_key, predicted, human_at, asked, human_by FROM issues "
               "WHERE human != '' ORDER BY human_at, key")


def _pg_relabels(url: str) -> list[tuple]:
    """The relabelled issues of a PostgreSQL store, read only: a database scopeguard never
    migrated is refused, not migrated (an export changes nothing)."""
    from .pg.connect import Database
    from .pg.schema import SCHEMA_VERSION as PG_VERSION
    from .pg.schema import version

    db = Database(url, size=1)
    try:
        found = version(db)
        if found == 0:
            raise QueueError(f"{redact(url)} is not a scopeguard store (no scopeguard_schema "
                             "table). Fix: pass the --store URL that scopeguard serve uses.")
        if found < PG_VERSION:
            raise QueueError(f"{redact(url)} was written by an older scopeguard serve (store "
                             f"schema {found}). Fix: start scopeguard serve (this version) on "
                             "it once: it upgrades the store, then export again.")
        return list(db.execute(_RELABELLED).fetchall())
    finally:
        db.close()


def _relabels(found: Sequence[tuple]) -> Relabels:
    rows, unresolved = [], []
    for key, text, label, predicted, at, asked, by in found:
        if label not in LABELS:
            unresolved.append(key)
            continue
        request = json.loads(text)
        rows.append({**{f: str(request.get(f) or "") for f in RELABEL_FIELDS}, "label": label,
                     "predicted": predicted, "recorded_at": _utc(at),
                     "by": "" if by == UNKNOWN_BY else by or "",
                     **({"asked": "needs_decision"} if asked else {})})
    return Relabels(rows, unresolved)


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
