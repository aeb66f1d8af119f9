"""Text someone else wrote, made safe for where scopeguard repeats it.

Every title, customer, URL, quote and name that scopeguard writes into a comment, a job
summary or a report passes through one of these. The rule is the same everywhere: what a
requester wrote is shown as text, never obeyed as markup.

- :func:`md_text`: inline Markdown text (GitHub comments, job summaries, the Markdown
  audit report). Markdown punctuation is backslash-escaped, so no emphasis, link, table
  cell, heading, raw HTML or HTML comment (``<!-- ... -->``) can be formed; ``@name``,
  ``#12`` and ``GH-12`` get a zero-width space so that they neither notify anyone nor
  cross-reference an issue, and so do bare addresses (``https://``, ``www.``), which a
  renderer would make links; line breaks become spaces.
- :func:`md_link`: a link only for an ``http(s)`` URL (``javascript:``, ``data:`` and the
  like become plain text), its address percent-encoded where Markdown would end it.
- :func:`md_code`: a short code span (label names).
- :func:`md_fence`: a fenced block that the content cannot close.
- :func:`csv_cell`: a spreadsheet cell that cannot run as a formula (OWASP's CSV
  injection guidance: a leading ``= + - @``, tab or carriage return gets a ``'``).
- :func:`plain`: terminal text without control characters (no escape sequences, no
  bidirectional overrides).

Jira's wiki markup and ADF read the escaped Markdown back (``md_unescape``); HTML uses
``html.escape``.

Example::

    md_text("<!-- scopeguard:label=core --> ping @boss")
    # '\\<!-- scopeguard:label=core --> ping @\\u200bboss'
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

ZWSP = "\u200b"
# What can form markup inside a line of scopeguard's output (a block marker at the text's
# start, '#', '-', '+', '>', '=' or '1.', is escaped by _BLOCK_START below): the
# escape itself, code, emphasis, links and images ('[' ']'), raw HTML and HTML comments
# ('<'), table cells, strike-through, entities ('&#64;' is an '@') and math ('$').
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|~&$])")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
# @mentions and issue references (#12, GH-12) notify people or cross-reference issues.
_MENTION = re.compile(r"(@|#(?=\d)|(?<![A-Za-z0-9])GH-(?=\d))")
# Bare addresses a Markdown renderer would turn into links (and, for an issue's URL, into a
# cross-reference on that issue): only scopeguard's own md_link makes links.
# No word boundary before them: GitHub links "1https://..." and "_www.x" too.
# What GitHub or Jira turn into a link (Jira's wiki also file:, mailto:, news:, nntp, irc).
_AUTOLINK = re.compile(r"(?i)(?:https?|ftps?|nntp|irc)://|www\.|\b(?:file|mailto|news):")
# What would start a block if the text began a line (a heading, a quote, a list item, a
# setext underline): escaped at the start of any md_text, wherever it is put.
_BLOCK_START = re.compile(r"^(#(?=#{0,5}(?:\s|$))|>|[-+](?=[\s-]|$)|=(?==*\s*$))"
                          r"|^(\d{1,9})([.)])(?=\s|$)")
# Control characters, bidirectional overrides, isolates and marks (text shown reversed).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                      r"\u2066-\u2069]")
# What JSON leaves raw (ensure_ascii=False) that a terminal or viewer acts on.
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                          r"\u2066-\u2069]")
# Zero-width spaces, word joiners, invisible operators, the BOM and the Mongolian vowel
# separator: nothing a terminal shows. The zero-width joiner and non-joiner stay: they
# shape Persian, Arabic and Indic words and hold emoji sequences together.
_INVISIBLE = re.compile(r"[\u180e\u200b\u2060-\u2064\ufeff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CSV_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                          r"\u2066-\u2069]")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (line breaks included) as one space."""
    return " ".join(str(text).split())


def clip(text: str, limit: int | None = None) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = one_line(text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def plain(text: str, limit: int | None = None) -> str:
    """Terminal-safe text: no control characters, bidirectional overrides or zero-width
    spaces (a terminal shows none of them, so "Ac\u200bme" would look like "Acme" and
    throw a table's columns out), one line."""
    return _one_line(_INVISIBLE.sub("", str(text)), limit)


def _one_line(text: str, limit: int | None = None) -> str:
    """:func:`plain`, zero-width spaces kept (Markdown shows what a requester wrote)."""
    return clip(_CONTROL.sub("", str(text)), limit)


def md_text(text: str, limit: int | None = None) -> str:
    """Inline Markdown that shows ``text`` literally (see the module docstring).

    Args:
        text: what someone else wrote.
        limit: cut the text (before escaping) to this many characters.
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", _one_line(text, limit))
    escaped = _BLOCK_START.sub(lambda m: "\\" + m.group(1) if m.group(1)
                               else m.group(2) + "\\" + m.group(3), escaped)
    escaped = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + ZWSP + m.group(0)[-1], escaped)
    return _MENTION.sub(lambda m: m.group(1) + ZWSP, escaped)


def no_controls(text: str) -> str:
    """``text`` without control characters (tabs and line feeds kept; carriage returns
    go) or bidirectional overrides and marks: for HTML, which escapes markup but shows
    these."""
    return _CONTROL.sub("", str(text))


def json_safe(dumped: str) -> str:
    """JSON text (``ensure_ascii=False``) with the characters a terminal or viewer acts on
    (C1 controls, bidirectional overrides, line separators) written as ``\\uXXXX``: the
    same data once parsed."""
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


def md_unescape(text: str) -> str:
    """The text :func:`md_text` escaped (and scopeguard's own Markdown) without escapes."""
    return _ESCAPED.sub(r"\1", text)


def safe_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL, percent-encoded where Markdown or HTML
    would end or break it; "" otherwise."""
    url = str(url or "").strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    # '[', ']' and '|' are encoded too: Jira's wiki markup would read them as a link.
    return quote(url, safe="/:?#@!$&*+,;=%-._")


def md_link(text: str, url: str, limit: int | None = None) -> str:
    """``[text](url)`` for an http(s) ``url``; only the escaped text for any other."""
    href = safe_url(url)
    label = md_text(text, limit)
    return f"[{label}]({href})" if href and label else label


def md_code(text: str) -> str:
    """A one-line code span of ``text`` (a label name): backticks become quotes."""
    return "`" + _one_line(text).replace("`", "'") + "`"


def md_fence(content: str, info: str = "") -> str:
    """``content`` in a fenced code block longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{content}\n{fence}"


def csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: a string starting (after spaces) with
    ``= + - @``, a tab or a carriage return gets a leading ``'``; control characters and
    bidirectional overrides (a terminal escape in a title, printed with the CSV) are
    dropped, line breaks and tabs kept. Numbers pass."""
    if not isinstance(value, str):
        return value
    value = _CSV_CONTROL.sub("", value)
    if value.startswith(_FORMULA_START) or value.lstrip(" ").startswith(_FORMULA_START):
        return "'" + value
    return value
