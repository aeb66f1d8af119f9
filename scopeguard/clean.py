"""Turn an issue's title and body into the text that gets embedded.

Issue bodies carry a lot that says nothing about the request: template headings
and boilerplate, HTML comments, checkboxes, code blocks, logs, quoted replies and
images, in Markdown and in Jira's wiki markup. They are removed here; what is left is
split into overlapping word windows so that long bodies are embedded whole (in chunks),
never cut silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The model reads at most 256 word pieces; 160 words stay under that for English prose.
CHUNK_WORDS = 160
CHUNK_OVERLAP = 32
MAX_CHUNKS = 24  # ~3,800 words; beyond that the verdict says the body was cut

_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
# A body is what anyone who can open an issue sends (up to 1 MB): no pattern may scan on
# to the end from each of many starts ('[' a 100,000 times took minutes). Runs stop at the
# character that would start the next match or after a few hundred characters (a tag's
# attributes, a macro's parameters, a link's target), and possessive runs (*+, ++) give
# nothing back.
_FENCE = re.compile(r"^[ \t]*(`{3,}+|~{3,}+)[^\n]*+\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
_DETAILS_SUMMARY = re.compile(r"</?(details|summary)[^<>]*+>", re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>\n]{0,500}+>")
_PARENS = r"\((?:[^()]++|\([^)]{0,500}+\))*+\)"  # a link's target, parentheses in it
_IMAGE = re.compile(r"!\[[^\[\]]*+\]" + _PARENS)
_LINK = re.compile(r"\[([^\[\]]++)\]" + _PARENS)
_URL = re.compile(r"https?://\S+")
# Ticked boxes are template confirmations ("I searched the issues"); unticked ones may
# list what is asked for, so only their box goes.
# Line patterns (re.M) pad with [^\S\n], never \s: \s takes line breaks too, and a body of
# 30,000 blank lines then took minutes to clean (every line a start, every start a scan).
_TICKED = re.compile(r"^[^\S\n]*[-*][^\S\n]*\[[xX]\].*$", re.M)
_CHECKBOX = re.compile(r"^[^\S\n]*[-*][^\S\n]*\[ \][^\S\n]*", re.M)
_QUOTE_HEADER = re.compile(r"^On .{0,200}wrote:[^\S\n]*$", re.M)
# A line's text is taken whole and trimmed in code (_line_text): a lazy group before
# trailing spaces, or two runs of spaces side by side, backtracked over a long line.
_HEADING = re.compile(r"^[^\S\n]{0,3}#{1,6}[^\S\n]+(.*)$", re.M)
_BOLD_LINE = re.compile(r"^[^\S\n]*\*\*([^*\n]{1,80})\*\*[^\S\n]*(?::[^\S\n]*)?$", re.M)
_INLINE_CODE = re.compile(r"`([^`\n]{1,80})`")
_LOGLIKE = re.compile(r"^\s*(at |File \"|Traceback|\$ |>>> |\[\d{4}-\d\d-\d\d|\d{4}-\d\d-\d\dT)")
# Jira wiki markup (Server/Data Center descriptions): code and quoted blocks go, headings
# and link texts stay as words, images, mentions and colour tags go.
_WIKI_BLOCK = re.compile(r"\{(code|noformat|quote)(?::[^}\n]{0,500}+)?\}.*?(?:\{\1\}|\Z)",
                         re.S | re.I)
_WIKI_HEADING = re.compile(r"^[^\S\n]*h[1-6]\.[^\S\n]+(.*)$", re.M)
_WIKI_QUOTE_LINE = re.compile(r"^[^\S\n]*bq\.[^\S\n].*$", re.M)
_WIKI_IMAGE = re.compile(r"!(?:https?://[^\s!]+|[^\s!|]+\.(?:png|jpe?g|gif|svg|bmp|webp))"
                         r"(?:\|[^!\n]*)?!", re.I)
_WIKI_LINK = re.compile(r"\[([^\[\]|\n]++)\|[^\]\n]{1,500}+\]")
_WIKI_BARE = re.compile(r"\[(?:~|https?://|mailto:)[^\[\]\n]++\]")
_WIKI_TAG = re.compile(r"\{(?:color|panel|anchor)(?::[^}\n]{0,500}+)?\}", re.I)

# Headings and prompts of common issue templates: the words of the template, not the request.
_TEMPLATE_PHRASES = [
    r"is your feature request related to a problem\??([^\S\n]*please describe\.?)?",
    r"describe the solution you'?d like\.?",
    r"describe alternatives you'?ve considered\.?",
    r"additional context\.?",
    r"a clear and concise description of what (the problem|you want to happen|you expected to happen) is\.?",
    r"a clear and concise description of any alternative solutions or features you'?ve considered\.?",
    r"add any other context or screenshots about the feature request here\.?",
    r"what version of [\w .-]+ are you using\??",
    r"(proposed|suggested) solution:?",
    r"(problem|motivation|use case|summary|description|feature request|context):?",
    r"ex\. i'?m always frustrated when \[\.\.\.\]",
]
_TEMPLATE = re.compile(r"^[^\S\n]*(" + "|".join(_TEMPLATE_PHRASES) + r")[^\S\n]*$", re.I | re.M)


_SURROGATE = re.compile("[\ud800-\udfff]")


def sound_text(text: str) -> str:
    """``text`` as UTF-8 can carry it: surrogate pairs (JSON's and YAML's ``\\ud83d\\udc4b``
    escapes of one emoji) joined, lone surrogates (a cut emoji) replaced by U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _line_text(match: re.Match[str], closing: str = "") -> str:
    """A heading's text as a sentence, or "" for a template's own heading (``closing``:
    the characters that may close it, as Markdown's '## Title ##')."""
    text = match.group(1).strip().rstrip(closing).strip()
    return "" if _TEMPLATE.fullmatch(text) else text + "."


def clean_text(text: str) -> str:
    """Remove markup and template noise from an issue body; keep the request's words."""
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HTML_COMMENT.sub(" ", text)
    text = _FENCE.sub("\n", text)
    text = _WIKI_BLOCK.sub("\n", text)
    text = _WIKI_QUOTE_LINE.sub("", text)
    text = _WIKI_IMAGE.sub(" ", text)
    text = _WIKI_LINK.sub(r"\1", text)
    text = _WIKI_BARE.sub(" ", text)
    text = _WIKI_TAG.sub(" ", text)
    text = _WIKI_HEADING.sub(_line_text, text)
    text = _QUOTE_HEADER.sub("", text)
    # Quoted replies: lines starting with '>' quote someone else.
    text = "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(">"))
    text = "\n".join(line for line in text.split("\n") if not _LOGLIKE.match(line))
    text = _DETAILS_SUMMARY.sub(" ", text)
    text = _IMAGE.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _TICKED.sub("", text)
    text = _CHECKBOX.sub("", text)
    text = _HEADING.sub(lambda m: _line_text(m, closing="#"), text)
    text = _BOLD_LINE.sub(lambda m: "" if _TEMPLATE.fullmatch(m.group(1)) else m.group(1) + ".",
                          text)
    text = _TEMPLATE.sub("", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = re.sub(r"[*_]{2,}", "", text)
    text = re.sub(r"[^\S\n]+", " ", text)  # every space but a line break, then the breaks:
    text = re.sub(r" ?\n\s*", "\n", text)  # linear (\s*\n\s* rescanned runs of \f or U+2028)
    return text.strip()


@dataclass(frozen=True)
class Document:
    """A request ready to embed: its cleaned title and body chunks."""

    title: str
    chunks: tuple[str, ...]
    words: int
    truncated: bool
    text: str = ""  # the cleaned title and body, line breaks kept (for text signals)


def prepare(title: str, body: str, chunk_words: int = CHUNK_WORDS,
            overlap: int = CHUNK_OVERLAP, max_chunks: int = MAX_CHUNKS) -> Document:
    """Clean ``title`` and ``body`` and split them into embedding chunks.

    The first chunk starts with the title, so a short request is one chunk holding
    both. Long bodies become overlapping windows of ``chunk_words`` words; beyond
    ``max_chunks`` windows the rest is dropped and ``truncated`` is set, which the
    verdict reports.
    """
    title_raw, body_raw = title, body
    title = clean_text(title).replace("\n", " ")
    body = clean_text(body)
    text = f"{title}.\n{body}" if title and body else title or body
    words = text.split()
    if not words:  # only links, images, code, comments: read what is there, markup and all
        raw = " ".join(f"{title_raw} {body_raw}".split()[:chunk_words])  # (every empty
        return Document(title=title, chunks=(raw,), words=0, truncated=False)  # one vector)
    step = max(1, chunk_words - overlap)
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start:start + chunk_words]))
        if start + chunk_words >= len(words):
            break
    truncated = len(chunks) > max_chunks
    return Document(title=title, chunks=tuple(chunks[:max_chunks]), words=len(words),
                    truncated=truncated, text=text)
