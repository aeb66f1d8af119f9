"""The PostgreSQL store's tables, versioned: created and migrated at start (or by
``scopeguard store migrate``), one process at a time (an advisory lock), each step in one
transaction with the version it reaches.

Tables (docs/postgresql.md says what each holds):

- ``events``: the queue, one row per delivery (its payload until done, its state, lease,
  attempts, outcome; the body's hash for replays).
- ``issues``: the issues classified (request, vector: demand), what was written back to
  each, and the labels people set instead.
- ``embeddings``, ``models``: the embedding cache, by model and text hash.
- ``health``: one row, written by /healthz's probe.
- ``scopeguard_schema``: the version of the above.

Example::

    version = migrate(Database(url))   # SCHEMA_VERSION once done
"""

from __future__ import annotations

from ..queue_errors import QueueError
from ..storage import redact
from .connect import Database

MIGRATE_LOCK = 0x5C09E601  # pg_advisory_xact_lock key: one migrating process at a time

# _MIGRATIONS[n] takes the database from version n to n + 1. The SQLite file's columns,
# with PostgreSQL's types (times stay epoch seconds, as the code shares statements).
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE IF NOT EXISTS events (
            seq BIGSERIAL PRIMARY KEY,
            delivery_id TEXT NOT NULL UNIQUE,
            event TEXT NOT NULL DEFAULT '',
            issue_key TEXT NOT NULL DEFAULT '',
            payload BYTEA,
            state TEXT NOT NULL DEFAULT 'queued',
            attempts INTEGER NOT NULL DEFAULT 0,
            received_at DOUBLE PRECISION NOT NULL,
            available_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            finished_at DOUBLE PRECISION,
            outcome TEXT,
            error TEXT,
            body_sha256 TEXT)""",
        "CREATE INDEX IF NOT EXISTS events_state ON events (state, available_at, seq)",
        "CREATE INDEX IF NOT EXISTS events_issue ON events (issue_key, state)",
        "CREATE INDEX IF NOT EXISTS events_body ON events (body_sha256, received_at)",
        """CREATE TABLE IF NOT EXISTS issues (
            key TEXT PRIMARY KEY,
            seq BIGSERIAL,
            request TEXT NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            vector BYTEA,
            comment_id TEXT NOT NULL DEFAULT '',
            applied TEXT NOT NULL DEFAULT '',
            human TEXT NOT NULL DEFAULT '',
            updated_at DOUBLE PRECISION NOT NULL,
            predicted TEXT NOT NULL DEFAULT '',
            human_key TEXT NOT NULL DEFAULT '',
            human_at DOUBLE PRECISION)""",
        "CREATE INDEX IF NOT EXISTS issues_updated ON issues (updated_at)",
        """CREATE TABLE IF NOT EXISTS embeddings (
            model TEXT NOT NULL,
            text_hash TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BYTEA NOT NULL,
            PRIMARY KEY (model, text_hash))""",
        "CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, dim INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at DOUBLE PRECISION)",
    ),
    # 2: as the SQLite file's 3: whether a person's label decided what scopeguard asked
    ("ALTER TABLE issues ADD COLUMN IF NOT EXISTS asked INTEGER NOT NULL DEFAULT 0",),
    # 3: as the SQLite file's 4: who set the person's label
    ("ALTER TABLE issues ADD COLUMN IF NOT EXISTS human_by TEXT NOT NULL DEFAULT ''",),
]
SCHEMA_VERSION = len(_MIGRATIONS)
TABLES = ("events", "issues", "embeddings", "models", "health")  # what the steps create


def version(db: Database) -> int:
    """The database's schema version (0: never migrated)."""
    row = db.execute("SELECT to_regclass('scopeguard_schema') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    found = db.execute("SELECT max(version) FROM scopeguard_schema").fetchone()
    return int(found[0] or 0)


def migrate(db: Database) -> tuple[int, int]:
    """Bring the database to SCHEMA_VERSION; returns (version before, version after).

    Safe to run from every replica at once: the advisory lock lets one migrate while the
    others wait, then find nothing left to do.
    """
    with db.tx() as tx:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
        tx.execute("CREATE TABLE IF NOT EXISTS scopeguard_schema (version INTEGER PRIMARY "
                   "KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        before = int(tx.execute("SELECT coalesce(max(version), 0) FROM scopeguard_schema")
                     .fetchone()[0])
        if before == 0:  # scopeguard never migrated it: tables of these names are another's
            taken = [name for name in TABLES if tx.execute(
                "SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]]
            if taken:  # raising rolls back: nothing of scopeguard's is left in it either
                raise QueueError(
                    f"{redact(db.url)} already has tables scopeguard did not create "
                    f"({', '.join(taken)}): migrating would change them. Fix: give "
                    "scopeguard a database of its own (CREATE DATABASE scopeguard).")
        if before > SCHEMA_VERSION:
            raise QueueError(f"{redact(db.url)} was written by a newer scopeguard (store schema "
                             f"{before}, this one knows {SCHEMA_VERSION}). Fix: upgrade "
                             "scopeguard on every replica.")
        for step, statements in enumerate(_MIGRATIONS[before:], start=before + 1):
            for statement in statements:
                tx.execute(statement)
            tx.execute("INSERT INTO scopeguard_schema (version) VALUES (?)", (step,))
    return before, max(before, SCHEMA_VERSION)
