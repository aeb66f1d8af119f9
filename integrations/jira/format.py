"""scopeguard's Markdown comment in Jira's two comment formats, and ADF back to text.

Server/Data Center take wiki markup (REST API v2): :func:`to_wiki` escapes what requesters
wrote, so a request title cannot inject markup. Cloud takes an Atlassian Document Format
document (REST API v3): :func:`to_adf`. Neither format can hide text, so the hidden
marker lines (``render.COMMENT_MARKER``, ``render.LABEL_MARKER``) become a grey footer,
kept verbatim so that scopeguard finds its comment again. :func:`adf_text` reads an ADF
body (a Cloud description or comment) back as plain text.

Only the Markdown that ``render.to_markdown`` writes is understood: headings, bullet
lists, pipe tables, quotes, ``<details>`` summaries, ``<sub>`` footers, and inline
bold, code and links.

Example::

    body = to_adf(markdown) if client.cloud else to_wiki(markdown)
    assert render.COMMENT_MARKER in adf_text(to_adf(markdown))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from scopeguard.markup import ZWSP, md_unescape

# --- Markdown to wiki markup and ADF ---------------------------------------------------------

# A backslash escape (markup.md_text writes them for everything a requester wrote) is
# matched first, so an escaped character never opens or closes bold, code or a link.
_INLINE = re.compile(r"\\(?P<esc>[!-/:-@\[-`{-~])|\*\*(?P<strong>.+?)\*\*|`(?P<code>[^`]+)`"
                     r"|\[(?P<text>(?:\\.|[^\]\\])+)\]\((?P<href>https?://[^)\s]+)\)")
# Markup characters to escape in free text; '-' and '_' only where they could open or close
# strike-through or emphasis (not inside words like "in-house" or "feature_fit").
_WIKI_SPECIAL = re.compile(r"([*{}\[\]|^~+!#]|\?(?=\?)|(?<![A-Za-z0-9])[-_]|[-_](?![A-Za-z0-9]))")
# A backslash cannot be escaped in wiki markup ("\\" is a line break): a requester's
# backslash is shown as the reverse solidus operator, which looks the same.
BACKSLASH = "\u29f5"
# Jira's emoticons that escaping leaves whole ("(/) approved" showed a green tick): a
# zero-width space after the opening character keeps them text.
_EMOTICON = re.compile(r"\((?=(?:[yni/x?]|on|off|flag|flagoff)\))|[:;](?=[()PpD])", re.I)
_MARKER_LINE = re.compile(r"^\s*<!--.*-->\s*$")
_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def _blocks(markdown: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """The Markdown scopeguard writes as (kind, content) blocks, and its hidden marker lines."""
    blocks: list[tuple[str, Any]] = []
    markers: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(("p", " ".join(para)))
            para.clear()

    for raw in markdown.split("\n"):
        line = raw.rstrip()
        if _MARKER_LINE.match(line):
            flush()
            markers.append(line.strip())
        elif not line.strip() or line.strip() == "</details>":
            flush()
        elif line.startswith("#"):
            flush()
            blocks.append(("h", line.lstrip("#").strip()))
        elif line.startswith("- "):
            flush()
            if blocks and blocks[-1][0] == "ul":
                blocks[-1][1].append(line[2:])
            else:
                blocks.append(("ul", [line[2:]]))
        elif line.startswith("|"):
            flush()
            if _SEPARATOR.match(line):
                continue
            # Cells split at unescaped pipes; escapes are resolved with the cell's text.
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if blocks and blocks[-1][0] == "table":
                blocks[-1][1].append(cells)
            else:
                blocks.append(("table", [cells]))
        elif line.startswith(">"):
            flush()
            blocks.append(("quote", line.lstrip("> ").strip()))
        elif line.startswith("<details>"):
            flush()
            summary = re.sub(r"</?(details|summary)>", "", line).strip()
            blocks.append(("p", f"**{summary}**"))
        elif line.startswith("<sub>"):
            flush()
            blocks.append(("small", re.sub(r"</?sub>", "", line).strip()))
        else:
            para.append(line.strip())
    flush()
    return blocks, markers


def _wiki_escape(text: str) -> str:
    escaped = _WIKI_SPECIAL.sub(r"\\\1", text.replace("\\", BACKSLASH))
    return _EMOTICON.sub(lambda m: m.group(0) + ZWSP, escaped)


def _inline(text: str) -> list[tuple[str, str, str]]:
    """The Markdown inline ``text`` as (kind, text, href) runs: ``text`` (escapes resolved,
    adjacent pieces joined), ``strong`` (its Markdown), ``code`` and ``link``."""
    runs: list[tuple[str, str, str]] = []

    def text_run(piece: str) -> None:
        if not piece:
            return
        if runs and runs[-1][0] == "text":
            runs[-1] = ("text", runs[-1][1] + piece, "")
        else:
            runs.append(("text", piece, ""))

    at = 0
    for m in _INLINE.finditer(text):
        text_run(text[at:m.start()])
        if m.group("esc") is not None:
            text_run(m.group("esc"))
        elif m.group("strong") is not None:
            runs.append(("strong", m.group("strong"), ""))
        elif m.group("code") is not None:
            runs.append(("code", m.group("code"), ""))
        else:
            runs.append(("link", md_unescape(m.group("text")), m.group("href")))
        at = m.end()
    text_run(text[at:])
    return runs


def _wiki_inline(text: str) -> str:
    out = []
    for kind, value, href in _inline(text):
        if kind == "strong":
            out.append("*" + _wiki_inline(value) + "*")
        elif kind == "code":
            out.append("{{" + _wiki_escape(value) + "}}")
        elif kind == "link":
            out.append(f"[{_wiki_escape(value)}|{href}]")
        else:
            out.append(_wiki_escape(value))
    return "".join(out)


def to_wiki(markdown: str) -> str:
    """scopeguard's Markdown comment as Jira wiki markup (Server/Data Center).

    Request titles and evidence are escaped, so a title cannot inject markup. The hidden
    marker lines become a grey footer, kept verbatim so the comment can be found again.
    """
    blocks, markers = _blocks(markdown)
    out = []
    for kind, content in blocks:
        if kind == "h":
            out.append("h3. " + _wiki_inline(content))
        elif kind == "ul":
            out.append("\n".join("* " + _wiki_inline(item) for item in content))
        elif kind == "table":
            rows = ["||" + "||".join(_wiki_inline(c) or " " for c in content[0]) + "||"]
            rows += ["|" + "|".join(_wiki_inline(c) or " " for c in row) + "|"
                     for row in content[1:]]
            out.append("\n".join(rows))
        elif kind == "quote":
            out.append("bq. " + _wiki_inline(content))
        elif kind == "small":
            out.append("_" + _wiki_inline(content) + "_")
        else:
            out.append(_wiki_inline(content))
    if markers:
        out.append("{color:#97a0af}" + " ".join(markers) + "{color}")
    return "\n\n".join(out)


def _adf_inline(text: str, marks: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for kind, value, href in _inline(text):
        if kind == "strong":
            nodes += _adf_inline(value, [*marks, {"type": "strong"}])
            continue
        extra = ([{"type": "code"}] if kind == "code" else
                 [{"type": "link", "attrs": {"href": href}}] if kind == "link" else [])
        all_marks = [*marks, *extra]
        if value:
            nodes.append({"type": "text", "text": value,
                          **({"marks": all_marks} if all_marks else {})})
    return nodes


def _para(text: str, marks: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"type": "paragraph", "content": _adf_inline(text, marks)}


def to_adf(markdown: str) -> dict[str, Any]:
    """scopeguard's Markdown comment as an ADF document (Jira Cloud, REST API v3)."""
    blocks, markers = _blocks(markdown)
    content: list[dict[str, Any]] = []
    for kind, body in blocks:
        if kind == "h":
            content.append({"type": "heading", "attrs": {"level": 3},
                            "content": _adf_inline(body)})
        elif kind == "ul":
            content.append({"type": "bulletList", "content": [
                {"type": "listItem", "content": [_para(item)]} for item in body]})
        elif kind == "table":
            def row(cells: list[str], cell_type: str) -> dict[str, Any]:
                return {"type": "tableRow", "content": [
                    {"type": cell_type, "attrs": {}, "content": [_para(c)]} for c in cells]}
            content.append({"type": "table", "attrs": {"isNumberColumnEnabled": False,
                                                       "layout": "default"},
                            "content": [row(body[0], "tableHeader"),
                                        *(row(r, "tableCell") for r in body[1:])]})
        elif kind == "quote":
            content.append({"type": "blockquote", "content": [_para(body)]})
        elif kind == "small":
            content.append(_para(body, [{"type": "em"}]))
        else:
            content.append(_para(body))
    if markers:
        content.append(_para(" ".join(markers),
                             [{"type": "textColor", "attrs": {"color": "#97a0af"}}]))
    return {"type": "doc", "version": 1, "content": content}



# --- ADF back to text ------------------------------------------------------------------------


_BLOCKS = ("paragraph", "heading", "listItem", "tableRow", "codeBlock", "blockquote", "rule")
_CELLS = ("tableCell", "tableHeader")


def adf_text(node: Any) -> str:
    """The plain text of an Atlassian Document Format node (blocks on their own lines).

    Walked with a stack of its own, not recursion: a description nested hundreds of lists
    deep (Jira Cloud stores what an editor or the API gave it) is read like any other.
    """
    pieces: list[list[str]] = [[]]  # the text so far of each node still open
    todo: list[tuple[bool, Any]] = [(False, node)]  # (True, type): close that node
    while todo:
        closing, item = todo.pop()
        if closing:
            inner = "".join(pieces.pop())
            pieces[-1].append(inner + "\n" if item in _BLOCKS else
                              inner.rstrip("\n") + " | " if item in _CELLS else inner)
        elif isinstance(item, str):
            pieces[-1].append(item)
        elif isinstance(item, list):
            todo.extend((False, n) for n in reversed(item))
        elif isinstance(item, dict) and item.get("type") == "text":
            pieces[-1].append(str(item.get("text", "")))
        elif isinstance(item, dict) and item.get("type") == "hardBreak":
            pieces[-1].append("\n")
        elif isinstance(item, dict):
            pieces.append([])
            todo += [(True, item.get("type")), (False, item.get("content") or [])]
    return "".join(pieces[0])
