"""The SQLite queue file's layout and its migrations (``PRAGMA user_version``): what
:class:`.queue.EventQueue` creates in a new file and how it upgrades an old one. (The
PostgreSQL store has its own: :mod:`.pg.schema`.)"""

from __future__ import annotations

# The file's layout as first shipped (PRAGMA user_version 0); _MIGRATIONS bring it up to
# SCHEMA_VERSION, for new files and old ones alike.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL DEFAULT '',
    issue_key TEXT NOT NULL DEFAULT '',
    payload BLOB,
    state TEXT NOT NULL DEFAULT 'queued',      -- queued | leased | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    available_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    finished_at REAL,
    outcome TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS events_state ON events (state, available_at, seq);
CREATE TABLE IF NOT EXISTS issues (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,          -- the Request as JSON
    model TEXT NOT NULL DEFAULT '',
    vector BLOB,                    -- float32 mean vector of the request under `model`
    comment_id TEXT NOT NULL DEFAULT '',
    applied TEXT NOT NULL DEFAULT '',   -- the verdict whose label scopeguard keeps on it
    human TEXT NOT NULL DEFAULT '',     -- a scope label a person set instead (a correction)
    updated_at REAL NOT NULL
);
"""

# _MIGRATIONS[n] takes a file from version n to n + 1, in one transaction.
_MIGRATIONS: list[tuple[str, ...]] = [
    # 1: what `scopeguard relabels` exports. Where a person's label stands, `predicted` is
    # backfilled from the last verdict the events table still holds (done events are kept
    # SCOPEGUARD_KEEP_DAYS; one scan of it per such issue), elsewhere it is `applied`;
    # `human_key` is filled in by the service at start, which knows the label names.
    ("ALTER TABLE issues ADD COLUMN predicted TEXT NOT NULL DEFAULT ''",  # scopeguard's label
     "ALTER TABLE issues ADD COLUMN human_key TEXT NOT NULL DEFAULT ''",  # `human` as a label
     "ALTER TABLE issues ADD COLUMN human_at REAL",  # when a person's `human` was first seen
     "UPDATE issues SET predicted = applied, human_at = CASE WHEN human != '' "
     "THEN updated_at END",
     r"""UPDATE issues SET predicted = coalesce((
            SELECT substr(e.outcome, 1, instr(e.outcome, ' (') - 1) FROM events AS e
            WHERE e.issue_key = issues.key AND e.state = 'done'
              AND (e.outcome LIKE 'core (%' OR e.outcome LIKE 'generalizable (%'
                   OR e.outcome LIKE 'one\_off (%' ESCAPE '\')
            ORDER BY e.finished_at DESC LIMIT 1), '') WHERE human != ''"""),
    # 2: the body's hash, so that a signed body accepted before is a duplicate whatever
    # delivery id it comes with (the id is outside the signature: a replay could change it).
    ("ALTER TABLE events ADD COLUMN body_sha256 TEXT",
     "CREATE INDEX IF NOT EXISTS events_body ON events (body_sha256, received_at)"),
    # 3: whether the person's label decided what scopeguard asked (its needs-decision
    # label was on the issue), for `scopeguard relabels` ("asked": "needs_decision").
    ("ALTER TABLE issues ADD COLUMN asked INTEGER NOT NULL DEFAULT 0",),
    # 4: who set the person's label (Jira's changelog names them), for `scopeguard relabels`
    ("ALTER TABLE issues ADD COLUMN human_by TEXT NOT NULL DEFAULT ''",),
]
SCHEMA_VERSION = len(_MIGRATIONS)
