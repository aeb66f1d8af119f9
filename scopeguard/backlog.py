"""Requests and backlogs: the ``Request`` record, JSONL/CSV loading, who asked.

A backlog file holds one request per line (JSONL) or row (CSV) with the fields
``id, title, body, author, customer, created_at, url`` and, optionally,
``labels`` (tracker labels) and ``label`` (a known scope decision, for eval).
"""

from __future__ import annotations

import csv
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .clean import sound_text
from .errors import InputError
from .markup import plain
from .positioning import LABELS, CustomerRule, Filters

MAX_TITLE = 1_000
MAX_BODY = 1_000_000  # 1 MB of text: beyond this the request is refused, not cut


@dataclass(frozen=True, slots=True)
class Request:
    """One feature request, from a file or a tracker."""

    id: str
    title: str
    body: str = ""
    author: str = ""
    customer: str = ""
    created_at: str = ""
    url: str = ""
    labels: tuple[str, ...] = ()
    org: str = ""
    label: str = ""  # a known decision (eval, calibrate); empty when unknown
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The author's account type as the tracker reports it (GitHub "Bot"/"User", Jira Cloud
    # "app"/"atlassian"), and the other names the tracker knows them by (Jira: email, name,
    # display name, account id): what filters.skip_bots and skip_authors read.
    author_type: str = field(default="", compare=False)
    author_ids: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def asker(self) -> str:
        """Who demand counts: the customer, else the author, else the request itself."""
        return self.customer or self.author or self.id


# Unicode's default-ignorable code points that are not format characters (Cf): drawn as
# nothing, so they too would make one name two customers.
_IGNORABLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f"
                        "\uffa0\U000e0000-\U000e0fff]")


def customer_key(name: str) -> str:
    """The name by which demand counts one customer: Unicode-normalised (NFKC: fullwidth
    "Ａｃｍｅ" is "Acme"), without invisible characters (zero-width spaces and joiners, bidi
    marks), spaces collapsed, case folded. "ACME  Corp", "Ac\u200bme Corp" and "acme corp"
    are one customer, not three. A name of invisible characters only is its own key."""
    text = unicodedata.normalize("NFKC", str(name))
    text = _IGNORABLE.sub("", "".join(c for c in text if unicodedata.category(c) != "Cf"))
    return " ".join(text.split()).casefold() or str(name).strip()


def distinct_customers(names: Iterable[str]) -> list[str]:
    """One name per customer (as first written, trimmed), in order; empty names left out."""
    seen: dict[str, str] = {}
    for name in names:
        key = customer_key(name)
        if key and key not in seen:
            seen[key] = " ".join(str(name).split())
    return list(seen.values())


def sound_request(request: Request) -> Request:
    """``request`` with text UTF-8 can carry in every field: a lone surrogate (a cut emoji,
    "\\ud83d" in a tracker's JSON) becomes U+FFFD, so the request can be written anywhere."""
    fixed = {k: sound_text(getattr(request, k)) for k in _FIELDS}
    if any(fixed[k] != getattr(request, k) for k in fixed):
        request = replace(request, **fixed)
    return request


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at ``\\n`` (and ``\\r\\n``) only. ``str.splitlines``
    also splits at U+2028, U+2029 and U+0085, which a JSON string may hold raw."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def check_request(request: Request, where: str = "request") -> Request:
    """Refuse requests that cannot be classified, saying why and what to do; text that
    UTF-8 cannot carry (lone surrogates from a cut emoji) is repaired, not refused."""
    request = sound_request(request)
    rid = request.id.strip()
    who = where if not rid or where.split()[-1] in (rid, f"#{rid}") else f"{where} {plain(rid, 80)}"
    if not request.title.strip() and not request.body.strip():
        raise InputError(f"{who}: title and body are both empty. "
                         "Fix: give the request a title or a body.")
    if len(request.title) > MAX_TITLE:
        raise InputError(f"{who}: title is {len(request.title):,} characters "
                         f"(limit {MAX_TITLE:,}). Fix: shorten the title; put detail in the body.")
    if len(request.body) > MAX_BODY:
        raise InputError(f"{who}: body is {len(request.body):,} characters "
                         f"(limit {MAX_BODY:,}). Fix: move logs and attachments out of the "
                         "body; scopeguard reads the request's prose.")
    if request.label and request.label not in LABELS:
        raise InputError(f"{who}: label {request.label!r} is not one of "
                         f"{', '.join(LABELS)}. Fix: correct the label or leave it empty.")
    return request


def unclassifiable(request: Request) -> str:
    """Why a tracker's request cannot be classified (empty, a title past the limit...), ""
    if it can: an issue nobody can edit any more is skipped and said, not a stopped run."""
    try:
        check_request(request, "request")
    except InputError as exc:  # "request 9: title is 5,000 characters (...). Fix: ..."
        return str(exc).split(". Fix:")[0].split(": ", 1)[-1]
    return ""


# [ \t], not \s, around a line's parts (see clean.py: \s spans line breaks, and blank lines
# by the thousand made the search quadratic)
# (the value is taken to the line's end and trimmed in code: a lazy group before trailing
# spaces backtracked over a long line; a section's value starts with no space, so the
# blank run before it is read once)
_FIELD_LINE = r"^[^\S\n]*(?:[*_]{{0,2}}){name}(?:[*_]{{0,2}})[^\S\n]*:(.+)$"
_FORM_SECTION = r"^[^\S\n]*#{{1,6}}[^\S\n]*{name}[^\S\n]*\n\s*([^\s#][^\n#]*)$"


def body_field(body: str, name: str) -> str:
    """The value of a ``Name: value`` line or an issue-form ``### Name`` section."""
    escaped = re.escape(name)
    body = (body or "").replace("\r\n", "\n").replace("\r", "\n")
    for pattern in (_FIELD_LINE, _FORM_SECTION):
        match = re.search(pattern.format(name=escaped), body, re.I | re.M)
        if match:
            value = match.group(1).strip().strip("*_").strip()
            if value and value.lower() not in ("_no response_", "no response", "n/a", "none"):
                return value
    return ""


def resolve_customer(request: Request, rule: CustomerRule) -> str:
    """Who asked, by the positioning file's ``customer`` rule; falls back to the author.

    An explicit ``customer`` on the request (a backlog column) always wins.
    """
    if request.customer:
        return request.customer
    if rule.source == "org" and request.org:
        return request.org
    if rule.source == "org" and "@" in request.author:
        return request.author.rsplit("@", 1)[1].lower()
    if rule.source == "label":
        prefix = rule.label_prefix.lower()
        for label in request.labels:
            if label.lower().startswith(prefix):
                value = label[len(prefix):].strip()
                if value:
                    return value
    if rule.source == "field":
        value = body_field(request.body, rule.field)
        if value:
            return value
    return request.author


def is_bot(login: str, kind: str = "") -> bool:
    """Whether an account is a bot: GitHub's user ``type`` Bot (or an App's ``name[bot]``
    login), or a Jira Cloud ``accountType`` of ``app`` (Automation for Jira, apps)."""
    return str(kind).lower() in ("bot", "app") or str(login).lower().endswith("[bot]")


def skipped_author(request: Request, filters: Filters) -> str:
    """Why the request's author is not a customer to classify for ("" when they are)."""
    names = [request.author, *request.author_ids]
    if filters.skip_bots and is_bot(request.author, request.author_type):
        return f"was opened by a bot ({request.author or 'unknown'}; filters.skip_bots)"
    excluded = {a.strip().lower() for a in filters.skip_authors if a.strip()}
    hit = next((n for n in names if n and n.strip().lower() in excluded), "")
    if hit:
        return f"was opened by {hit}, whom filters.skip_authors leaves out"
    return ""


def is_feature_request(request: Request, filters: Filters) -> tuple[bool, str]:
    """(True, "") or (False, why it is skipped) by the positioning file's filters."""
    why = skipped_author(request, filters)
    if why:
        return False, why
    kind = str(request.extra.get("issue_type") or "").strip()
    if kind and kind.lower() in {t.lower() for t in filters.skip_issue_types}:
        return False, f"is of issue type {kind!r} (filters.skip_issue_types)"
    labels = {label.lower() for label in request.labels}
    skip = labels & {s.lower() for s in filters.skip_labels}
    if skip:
        return False, f"has label {sorted(skip)[0]!r}"
    if filters.require_labels and not labels & {s.lower() for s in filters.require_labels}:
        return False, "has none of the labels " + ", ".join(filters.require_labels)
    title = request.title.strip().lower()
    for prefix in filters.skip_title_prefixes:
        if title.startswith(prefix.lower()):
            return False, f"title starts with {prefix!r}"
    return True, ""


# --- files ---------------------------------------------------------------------------------

_FIELDS = ("id", "title", "body", "author", "customer", "created_at", "url", "org", "label")
REQUEST_KEYS = (*_FIELDS, "labels")  # what a request's JSON object is read from


def request_from_dict(data: dict, where: str) -> Request:
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object with id, title and body. "
                         "Fix: write one object per line.")
    if not data.get("title") and not data.get("body"):
        raise InputError(f"{where}: has neither 'title' nor 'body'. "
                         "Fix: every request needs a title or a body.")
    labels = data.get("labels") or ()
    if isinstance(labels, str):
        labels = tuple(x.strip() for x in labels.split(",") if x.strip())
    elif not isinstance(labels, list | tuple) or not all(
            isinstance(x, str | int | float) and not isinstance(x, bool) for x in labels):
        raise InputError(f"{where}: 'labels' is {type(labels).__name__} {str(labels)[:40]}; "
                         "expected a list of label names. Fix: write \"labels\": [\"a\", "
                         "\"b\"] or \"labels\": \"a, b\".")
    labels = tuple(str(x) for x in labels)
    for k in _FIELDS:  # text, or a number (an id): not an object, a list, NaN or infinity
        value = data.get(k)
        if isinstance(value, dict | list) or (isinstance(value, float)
                                              and not math.isfinite(value)):
            raise InputError(f"{where}: '{k}' is {type(value).__name__} {str(value)[:40]}; "
                             f"expected text. Fix: write \"{k}\" as a string.")
    values = {k: "" if data.get(k) is None else str(data.get(k)) for k in _FIELDS}
    if not values["id"]:
        values["id"] = where.rsplit(" ", 1)[-1]
    extra = {k: v for k, v in data.items() if k not in REQUEST_KEYS}
    return check_request(Request(**values, labels=tuple(labels), extra=extra), where)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:  # JSON keeps the last silently: one of them would be lost
            raise ValueError(f"the key {plain(key, 40)!r} appears twice in one object")
        found[key] = value
    return found


def load_json(text: str) -> Any:
    """JSON as :func:`json.loads` reads it, but an object that gives a key twice ("title"
    twice: the first title silently gone) is refused (ValueError), as in positioning files."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def read_backlog(path: str | Path, encoding: str | None = None,
                 option: str = "--encoding") -> list[Request]:
    """Load requests from a ``.jsonl``/``.json``/``.csv`` file, with errors naming the line.

    The text is UTF-8 (a BOM is fine), or UTF-16/32 with a BOM (Excel's "Unicode text"),
    or ``encoding`` when given (e.g. ``latin-1`` for an old export). ``option``: how the
    command takes an encoding, for the error's fix ("" when it takes none).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory. Fix: pass the backlog file in it.")
    if not path.exists():  # a pipe (--from-file <(...)) or a device is read as a file
        raise InputError(f"{path}: backlog file not found. Fix: check the path.")
    suffix = path.suffix.lower()
    text = decode(path.read_bytes(), str(path), encoding, option)
    requests: list[Request] = []
    if suffix == ".csv":
        requests = _read_csv(text, path)
    elif suffix == ".json":
        try:
            data = load_json(text)
        except RecursionError:
            raise InputError(f"{path}: the JSON nests too deeply to be a backlog. Fix: a JSON "
                             "list of flat request objects.") from None
        except ValueError as exc:  # not JSON, or a number of thousands of digits
            raise InputError(f"{path}: not valid JSON ({exc}). Fix: a JSON list of "
                             "request objects, or use .jsonl with one object per line.") from None
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of requests, got "
                             f"{type(data).__name__ if data is not None else 'null'}. Fix: put "
                             "the requests in a list ([{...}, {...}]), or one object per line "
                             "in a .jsonl file.")
        for n, item in enumerate(data, start=1):
            requests.append(request_from_dict(item, f"{path} item {n}"))
    else:
        for n, line in enumerate(jsonl_lines(text), start=1):
            if not line.strip():
                continue
            try:
                item = load_json(line)
            except RecursionError:
                raise InputError(f"{path} line {n}: the JSON nests too deeply to be a request. "
                                 "Fix: one flat JSON object per line.") from None
            except ValueError as exc:  # not JSON, or a number of thousands of digits
                raise InputError(f"{path} line {n}: not valid JSON "
                                 f"({getattr(exc, 'msg', exc)}). "
                                 "Fix: one JSON object per line (JSONL).") from None
            requests.append(request_from_dict(item, f"{path} line {n}"))
    seen: set[str] = set()
    for r in requests:
        if r.id in seen:
            raise InputError(f"{path}: id {r.id!r} appears twice (a request without an id "
                             "is given its line number, or its place in a JSON list). Fix: "
                             "ids must be unique: give every request its id, or none.")
        seen.add(r.id)
    return requests


def _read_csv(text: str, path: Path) -> list[Request]:
    """The requests of a CSV text: quoted fields may hold line breaks (any of them) and a
    body up to the body limit; a quote left open is an error naming the line where its
    field began, not the rows after it swallowed. Otherwise as lenient as csv is (a space
    after a closing quote is kept)."""
    csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_BODY + 1024))
    delimiter = _delimiter(text)
    try:
        return _csv_rows(text, path, strict=True, delimiter=delimiter)
    except csv.Error:  # a quirk the strict reader refuses and csv reads leniently
        return _csv_rows(text, path, strict=False, delimiter=delimiter)


def _delimiter(text: str) -> str:
    """The header line's most frequent separator outside quotes: ',' (on a tie too), tab
    (Excel's "Unicode text") or ';' (a spreadsheet in a locale whose decimal mark is the
    comma). A comma inside a column's name ("Customer (name, org)") does not decide it."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = {c: unquoted.count(c) for c in (",", "\t", ";")}
    return max(counts, key=lambda c: (counts[c], c == ","))


def _csv_rows(text: str, path: Path, strict: bool, delimiter: str = ",") -> list[Request]:
    import io

    consumed = 0  # physical lines read so far

    def lines() -> Iterator[str]:
        nonlocal consumed
        for line in io.StringIO(text, newline=""):
            consumed += 1
            yield line

    reader = csv.reader(lines(), strict=strict, delimiter=delimiter)
    header: list[str] | None = None
    requests = []
    while True:
        began = consumed + 1
        try:
            row = next(reader, None)
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise InputError(f"{path} line {began}: a quoted field that begins here is "
                                 "never closed. Fix: close it with a quote (a quote inside "
                                 "a field is written twice: \"\").") from None
            if "field larger than field limit" in str(exc):
                raise InputError(f"{path} line {began}: a field is larger than "
                                 f"{csv.field_size_limit():,} characters. Fix: move logs and "
                                 "attachments out of the request.") from None
            if strict:
                raise  # the lenient reader tries it
            raise InputError(f"{path} line {began}: not valid CSV ({exc}). Fix: save the "
                             "file again from the spreadsheet, as CSV UTF-8.") from None
        if row is None:
            break
        if not row:  # a blank line
            continue
        if header is None:
            header = _csv_header(row, path)
            continue
        values: dict[str | None, Any] = dict(zip(header, row, strict=False))
        if len(row) > len(header):
            values[None] = row[len(header):]
        requests.append(request_from_dict(values, f"{path} line {began}"))
    if header is None:
        raise InputError(f"{path}: CSV header needs a 'title' or 'body' column (found "
                         "None). Fix: add a header row.")
    return requests


def _csv_header(row: list[str], path: Path) -> list[str]:
    """The header's column names: a request field's in any case ("Title"); refused when a
    column is given twice or is a near miss of a field ("tittle": the title would be left
    empty); other columns are kept as they are (extra fields), among them a field's name
    with more words ("Customer ID") and any near miss of a field the header has too."""
    import difflib

    header = [name.strip().lower() if name.strip().lower() in REQUEST_KEYS else name
              for name in row]
    twice = sorted({name for name in header if header.count(name) > 1 and name})
    if twice:
        raise InputError(f"{path}: the CSV column {twice[0]!r} appears twice (only one "
                         "would be read). Fix: keep one of them.")
    for name in header:
        near = [] if name in REQUEST_KEYS else difflib.get_close_matches(
            name.strip().lower(), REQUEST_KEYS, n=1, cutoff=0.75)
        # Not a misspelling: the field is there too ("customer" beside "customer_id"), or
        # the name is the field and more words ("Customer ID", "author.email").
        if near and (near[0] in header or re.match(
                rf"{re.escape(near[0])}[\s_.-]+\w", name.strip().lower())):
            near = []
        if near:
            raise InputError(f"{path}: unknown CSV column {name!r}. Fix: did you mean "
                             f"{near[0]!r}? (Other columns are kept as extra fields.)")
    if not {"title", "body"} & set(header):
        raise InputError(f"{path}: CSV header needs a 'title' or 'body' column (found "
                         f"{row}). Fix: add a header row, or name the columns title and "
                         "body.")
    return header


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode(raw: bytes, where: str, encoding: str | None = None,
           option: str = "--encoding") -> str:
    """Text of a file: by its byte-order mark, else ``encoding``, else UTF-8; an error that
    says which byte is wrong and how to re-save the file otherwise (or to pass ``option``,
    when the command has one)."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            encoding = name
            break
    try:
        return raw.decode(encoding or "utf-8")
    except LookupError:
        raise InputError(f"{where}: unknown encoding {encoding!r}. Fix: pass --encoding with "
                         "a Python codec name, e.g. latin-1 or cp1252.") from None
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        other = (f", or pass {option} with its encoding, e.g. {option} latin-1" if option
                 else "")
        excel = " (Excel: 'CSV UTF-8')" if str(where).lower().endswith(".csv") else ""
        raise InputError(f"{where} line {line}: not {exc.encoding} (byte 0x{raw[exc.start]:02x}). "
                         f"Fix: save the file as UTF-8{excel}{other}.") from None


def with_customers(requests: Iterable[Request], rule: CustomerRule) -> list[Request]:
    """The requests with ``customer`` filled in by ``rule``."""
    return [replace(r, customer=resolve_customer(r, rule)) for r in requests]
