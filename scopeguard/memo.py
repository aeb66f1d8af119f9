"""The audit's memo: neighbour lists and verdicts kept between runs, in the SQLite cache file.

A re-audit of a backlog that did not change recomputes nothing but the report; when some
requests changed, only what they touch is recomputed:

- **Neighbour lists** are stored per request key (a hash of everything the request says:
  id, title, body, author, customer, date, labels...) under a context of (model, cosine
  threshold, list length), with the set of keys of the last run. A request of the last run
  keeps its list, minus requests that left, plus the new or changed requests that are close
  to it (their rows are the only similarities computed: ``changed x n``, not ``n x n``).
  A list that was full (``limit`` long) and lost a member is recomputed, as its next-best
  neighbour was never stored.
- **Reports**: the last few rendered reports, per (every request's key in order, the
  verdict context, the format), stored as they are written, in compressed parts of about
  a megabyte. An audit of a backlog that did not change at all writes the stored report
  again, a part at a time, without reading a vector or a verdict.
- **Verdicts** are stored per (request key, its neighbour keys and scores, verdict
  context): the positioning file, model, thresholds, head and precedents. Any change to
  one of these makes a new key; unused rows are pruned after ``KEEP_DAYS``.

Verdicts are stored as JSON and rebuilt field by field (:meth:`Verdict.from_dict`), never
unpickled: the Action restores this file from a cache that others can write to.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cache import _database_error, connect
from .classify import Verdict
from .errors import ScopeguardError

KEEP_DAYS = 30
KEEP_REPORTS = 8  # rendered reports kept (the most recently used)
_CHUNK = 500
_REPORT_PART = 1 << 20  # characters of report text a stored part holds
_STAGING = "staging:"  # report parts being stored: staging:<uuid>:<unix time>

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memo_neighbours (
    context TEXT NOT NULL,
    request_key TEXT NOT NULL,
    neighbours TEXT NOT NULL,          -- JSON [[request_key, cosine], ...], best first
    PRIMARY KEY (context, request_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memo_members (
    context TEXT PRIMARY KEY,
    request_keys TEXT NOT NULL         -- the last run's request keys, one per line
);
CREATE TABLE IF NOT EXISTS memo_means (
    model TEXT NOT NULL,
    request_key TEXT NOT NULL,
    vector BLOB NOT NULL,              -- float32: the request's normalised mean vector
    used_at REAL NOT NULL,
    PRIMARY KEY (model, request_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memo_reports (
    report_key TEXT PRIMARY KEY,       -- every request's key, the verdict context, the format
    report TEXT NOT NULL,              -- JSON {"summary": ..., "parts": how many parts}
    used_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memo_report_parts (
    report_key TEXT NOT NULL,
    n INTEGER NOT NULL,                -- 0, 1, ...: the report's text is the parts in order
    part BLOB NOT NULL,                -- zlib-compressed UTF-8
    PRIMARY KEY (report_key, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memo_verdicts (
    verdict_key TEXT PRIMARY KEY,
    verdict TEXT NOT NULL,             -- Verdict.to_dict() as JSON
    used_at REAL NOT NULL
) WITHOUT ROWID;
"""


def _text(raw: bytes) -> str:
    """A TEXT column's value; one whose bytes are not UTF-8 (a damaged page) reads as a
    text no JSON parser or key matches, so its row counts as damaged."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "\ufffd"


def digest(*parts: Any) -> str:
    """A stable hash of JSON-able parts (dataclasses by their fields)."""
    text = json.dumps(parts, sort_keys=True, default=_plain, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


class AnalysisMemo:
    """Neighbour lists and verdicts of earlier audits (see the module's docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.conn = connect(path)
        self.conn.text_factory = _text  # a damaged row is recomputed, never a traceback
        self.reused_lists = self.computed_rows = 0
        self.reused_verdicts = self.computed_verdicts = 0
        self.reused_report = False
        self.neighbour_conflict = False  # another audit saved its lists during this one
        self.report_error = ""  # why the last report was not kept, when it was not
        try:
            with self.conn:
                self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise _database_error(self.path, exc) from None

    def close(self) -> None:
        self.conn.close()

    # --- neighbour lists ---------------------------------------------------------------

    def members(self, context: str) -> set[str] | None:
        row = self.conn.execute("SELECT request_keys FROM memo_members WHERE context = ?",
                                (context,)).fetchone()
        return set(row[0].split("\n")) - {""} if row else None

    def neighbour_lists(self, context: str, keys: Sequence[str]
                        ) -> dict[str, list[tuple[str, float]]]:
        found: dict[str, list[tuple[str, float]]] = {}
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            for key, text in self.conn.execute(
                    f"SELECT request_key, neighbours FROM memo_neighbours WHERE context = ? "
                    f"AND request_key IN ({marks})", (context, *chunk)):
                try:
                    found[key] = [(str(k), float(s)) for k, s in json.loads(text)]
                except (ValueError, TypeError):
                    continue  # a damaged row: that request's list is computed again
        return found

    def save_neighbours(self, context: str,
                        lists: Mapping[str, list[tuple[str, float]]]
                        | Iterable[tuple[str, list[tuple[str, float]]]],
                        members: Iterable[str], before: set[str] | None = None) -> None:
        """Write the lists that changed (a mapping, or ``(key, list)`` pairs made one at a
        time) and the run's members; forget requests that left (``before``: the members
        this run started from; ``None`` forgets every row not in ``members``).

        Another audit on the same file may have saved its own lists since this run read
        ``before``: this run's changed lists on top of them would describe neither backlog,
        and later runs would keep them. Then nothing is kept for the context (the next run
        computes its lists afresh; this run's own are right for this run)."""
        keys = set(members)
        items = lists.items() if isinstance(lists, Mapping) else lists
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")  # no other run saves between check and write
            if self.members(context) != before:
                self.neighbour_conflict = True
                self.conn.execute("DELETE FROM memo_neighbours WHERE context = ?", (context,))
                self.conn.execute("DELETE FROM memo_members WHERE context = ?", (context,))
                return
            self.conn.executemany(
                "INSERT OR REPLACE INTO memo_neighbours (context, request_key, neighbours) "
                "VALUES (?, ?, ?)",
                ((context, k, json.dumps(v)) for k, v in items))
            if before is None:
                stored = {k for (k,) in self.conn.execute(
                    "SELECT request_key FROM memo_neighbours WHERE context = ?", (context,))}
            else:
                stored = before
            self.conn.executemany(
                "DELETE FROM memo_neighbours WHERE context = ? AND request_key = ?",
                ((context, k) for k in stored - keys))
            self.conn.execute("INSERT OR REPLACE INTO memo_members (context, request_keys) "
                              "VALUES (?, ?)",
                              (context, "\n".join(sorted(keys))))

    # --- mean vectors -------------------------------------------------------------------

    def means(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored mean vectors (sound ones only: a damaged row is computed again)."""
        found: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            for key, blob in self.conn.execute(
                    f"SELECT request_key, vector FROM memo_means WHERE model = ? AND "
                    f"request_key IN ({marks})", (model, *chunk)):
                vector = np.frombuffer(blob, np.float32) if len(blob) % 4 == 0 else None
                if vector is not None and len(vector) and np.isfinite(vector).all() and \
                        abs(float(vector @ vector) - 1.0) < 1e-3:
                    found[key] = vector
        if found and len({len(v) for v in found.values()}) > 1:
            return {}  # rows of mixed sizes: trust none of them
        self._touch("memo_means", "model = ? AND request_key", (model,), list(found))
        return found

    def save_means(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        now = time.time()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO memo_means (model, request_key, vector, used_at) "
                "VALUES (?, ?, ?, ?)",
                ((model, k, np.asarray(v, np.float32).tobytes(), now)
                 for k, v in vectors.items()))
            self.conn.execute("DELETE FROM memo_means WHERE used_at < ?",
                              (now - KEEP_DAYS * 86400,))

    # --- verdicts ----------------------------------------------------------------------

    def verdicts(self, keys: Sequence[str], touch: bool = True) -> dict[str, Verdict]:
        found: dict[str, Verdict] = {}
        for chunk in _chunks(list(dict.fromkeys(keys))):
            marks = ",".join("?" * len(chunk))
            for key, text in self.conn.execute(
                    f"SELECT verdict_key, verdict FROM memo_verdicts WHERE verdict_key IN "
                    f"({marks})", chunk):
                try:
                    found[key] = Verdict.from_dict(json.loads(text))
                except (ValueError, TypeError, KeyError):
                    continue  # damaged or from an older layout: classified again
        if touch:
            self._touch("memo_verdicts", "verdict_key", (), list(found))
        return found

    def sound_verdicts(self, keys: Sequence[str], block: int = 4096) -> set[str]:
        """Which of ``keys`` have a sound stored verdict, read a block at a time and not
        kept (:class:`StoredVerdicts` reads them again when they are needed)."""
        sound: set[str] = set()
        for start in range(0, len(keys), block):
            sound.update(self.verdicts(keys[start:start + block]))
        return sound

    def _touch(self, table: str, where: str, fixed: tuple, keys: list[str]) -> None:
        """Mark rows used now (``where`` ends in the key column): pruning spares them. A
        file that cannot be written (read-only, locked) only loses that mark."""
        try:
            with self.conn:
                now = time.time()
                for chunk in _chunks(keys):
                    marks = ",".join("?" * len(chunk))
                    self.conn.execute(f"UPDATE {table} SET used_at = ? WHERE {where} IN "
                                      f"({marks})", (now, *fixed, *chunk))
        except sqlite3.OperationalError:
            pass

    # --- whole reports --------------------------------------------------------------------

    def report(self, key: str) -> StoredReport | None:
        """The report stored under ``key``, or None (none, or damaged: every part is read
        and checked before the report is offered, so a damaged one is never half written)."""
        row = self.conn.execute("SELECT report FROM memo_reports WHERE report_key = ?",
                                (key,)).fetchone()
        if row is None:
            return None
        try:
            found = json.loads(row[0])
            summary, parts = found["summary"], found["parts"]
            if not (isinstance(summary, str) and type(parts) is int and parts >= 1):
                return None
            stored = StoredReport(self.conn, key, summary, parts, self.path)
            for _ in stored.parts():
                pass
        except (ValueError, TypeError, KeyError, ScopeguardError):
            return None  # damaged (or an older layout): the audit runs and stores it again
        self._touch("memo_reports", "report_key", (), [key])
        self.reused_report = True
        return stored

    def save_report(self, key: str, parts: Iterable[str], summary: str) -> Iterator[str]:
        """Hand on each of ``parts`` (the caller writes them out as they come) while storing
        them under ``key``; the report is stored once the caller has taken every part and
        asked for the next (a ``for`` loop does). Each stored part is its own short
        transaction under a staging key, so no write lock is held while the report is
        written out; the last transaction publishes it. If the parts stop early (an error,
        the consumer gone), the staged parts are removed and nothing of it is kept. If the
        memo cannot store it (a full disk, a locked file), the parts still flow and
        ``report_error`` says why it was not kept."""
        staging = f"{_STAGING}{uuid.uuid4().hex}:{time.time():.0f}"
        count, size, pending = 0, 0, []
        self.report_error = ""
        storing = True

        def attempt(step) -> None:
            nonlocal storing
            if storing:
                try:
                    with self.conn:
                        step()
                except sqlite3.Error as exc:
                    storing, self.report_error = False, str(exc)
                    self._drop_staged(staging)

        def flush() -> None:
            nonlocal count, size
            if storing:
                data = zlib.compress("".join(pending).encode("utf-8", "surrogatepass"), 6)
                attempt(lambda: self.conn.execute(
                    "INSERT INTO memo_report_parts (report_key, n, part) VALUES (?, ?, ?)",
                    (staging, count, data)))
            count, size = count + 1, 0
            pending.clear()

        def publish() -> None:
            (staged,) = self.conn.execute("SELECT count(*) FROM memo_report_parts WHERE "
                                          "report_key = ?", (staging,)).fetchone()
            if staged != count:  # never replace a sound report with an incomplete one
                raise sqlite3.IntegrityError(f"{count - staged} staged part(s) went missing")
            self.conn.execute("DELETE FROM memo_report_parts WHERE report_key = ?", (key,))
            self.conn.execute("UPDATE memo_report_parts SET report_key = ? WHERE report_key = ?",
                              (key, staging))
            self.conn.execute("INSERT OR REPLACE INTO memo_reports (report_key, report, used_at) "
                              "VALUES (?, ?, ?)",
                              (key, json.dumps({"summary": summary, "parts": count},
                                               ensure_ascii=False), time.time()))
            self.conn.execute(
                "DELETE FROM memo_reports WHERE report_key NOT IN (SELECT report_key FROM "
                "memo_reports ORDER BY used_at DESC LIMIT ?)", (KEEP_REPORTS,))
            self.conn.execute(f"DELETE FROM memo_report_parts WHERE report_key NOT LIKE "
                              f"'{_STAGING}%' AND report_key NOT IN "
                              f"(SELECT report_key FROM memo_reports)")

        try:
            for part in parts:
                yield part
                pending.append(part)
                size += len(part)
                if size >= _REPORT_PART:
                    flush()
            if pending or not count:
                flush()
            attempt(publish)
        except BaseException:
            self._drop_staged(staging)
            raise
        self._drop_stale_staging()

    def _drop_staged(self, staging: str) -> None:
        try:
            with self.conn:
                self.conn.execute("DELETE FROM memo_report_parts WHERE report_key = ?",
                                  (staging,))
        except sqlite3.Error:
            pass  # left for the next audit's clean-up of stale staging

    def _drop_stale_staging(self, older: float = 86400) -> None:
        """Remove parts staged more than ``older`` seconds ago by an audit that was killed."""
        try:
            stale = [k for (k,) in self.conn.execute(
                f"SELECT DISTINCT report_key FROM memo_report_parts WHERE report_key LIKE "
                f"'{_STAGING}%'") if _staged_at(k) < time.time() - older]
            for k in stale:
                self._drop_staged(k)
        except sqlite3.Error:
            pass

    def save_verdicts(self, verdicts: dict[str, Verdict], prune: bool = True) -> None:
        """Store ``verdicts``; ``prune``: and forget those unused for ``KEEP_DAYS`` (a scan
        of the table: an audit saving a batch at a time prunes once, at its end)."""
        now = time.time()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO memo_verdicts (verdict_key, verdict, used_at) "
                "VALUES (?, ?, ?)",
                ((k, json.dumps(v.to_dict(), ensure_ascii=False), now)
                 for k, v in verdicts.items()))
        if prune:
            self.prune_verdicts()

    def prune_verdicts(self) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM memo_verdicts WHERE used_at < ?",
                              (time.time() - KEEP_DAYS * 86400,))


class StoredVerdicts(Sequence[Verdict]):
    """An analysis's verdicts as stored in the memo, in request order, read back a block at
    a time as they are used (a million verdicts held at once took 4 GB): fast in order, as
    the report reads them; one block is held at a time."""

    def __init__(self, memo: AnalysisMemo, keys: Sequence[str], block: int = 4096) -> None:
        self.memo, self.keys, self.size = memo, keys, block
        self._at, self._block = -1, []

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        at = i // self.size
        if at != self._at:
            keys = self.keys[at * self.size:(at + 1) * self.size]
            found = self.memo.verdicts(keys, touch=False)
            missing = [k for k in keys if k not in found]
            if missing:
                raise ScopeguardError(
                    f"{self.memo.path}: {len(missing)} verdict(s) of this audit left the "
                    "cache file while it ran (another audit pruning it?). Fix: run the "
                    "audit again, or give each concurrent audit its own --db.")
            self._at, self._block = at, [found[k] for k in keys]
        return self._block[i - at * self.size]

    def __iter__(self) -> Iterator[Verdict]:
        return (self[i] for i in range(len(self)))


class StoredReport:
    """A report in the memo: its summary, and its text a part at a time."""

    def __init__(self, conn: sqlite3.Connection, key: str, summary: str, count: int,
                 path: str = "") -> None:
        self.conn, self.key, self.summary, self.count = conn, key, summary, count
        self.path = path

    def parts(self) -> Iterator[str]:
        for n in range(self.count):
            row = self.conn.execute("SELECT part FROM memo_report_parts WHERE report_key = ? "
                                    "AND n = ?", (self.key, n)).fetchone()
            try:
                if row is None:
                    raise KeyError(n)
                yield zlib.decompress(row[0]).decode("utf-8", "surrogatepass")
            except (KeyError, zlib.error, UnicodeDecodeError):
                raise ScopeguardError(
                    f"{self.path}: part {n} of the stored report changed while it was written "
                    "(another audit on the same file?). Fix: run the audit again, with "
                    "--recompute to leave the stored report aside.") from None

    @property
    def text(self) -> str:
        return "".join(self.parts())


def _staged_at(key: str) -> float:
    try:
        return float(key.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0.0


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
