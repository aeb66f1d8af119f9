"""``scopeguard init --from-docs``: a first positioning file drafted from the product's docs.

Pure: text in, a draft out. The opening paragraphs give the category and the statements,
feature lists and the headings under a features section give the features, and sentences
that state a limit ("does not", "won't", "out of scope", "use X instead", "deliberately")
give the non-goals. Every entry keeps where it came from (``FILE:LINE``), and every field
the docs do not support stays empty with a TODO comment saying what to write: nothing is
invented. Markdown and reStructuredText.

    docs = [Doc("README.md", text)]
    print(render(draft(docs)))     # YAML with "# from README.md:12" comments
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Doc:
    path: str
    text: str


@dataclass(frozen=True)
class Found:
    """One drafted entry and where it came from."""

    name: str
    description: str = ""
    source: str = ""  # FILE:LINE
    instead: str = ""


@dataclass
class Draft:
    product: str = ""
    product_source: str = ""
    category: str = ""
    category_source: str = ""
    statements: list[Found] = field(default_factory=list)
    features: list[Found] = field(default_factory=list)
    non_goals: list[Found] = field(default_factory=list)
    alternative: Found | None = None


# What each field the docs rarely state is for: the TODO comment and `check` say it.
TODO = {
    "target_customer": "who exactly uses or buys it, in what situation (role, size, "
                       "context): requests from anyone else are another product's job",
    "need": "the problem they have today, in their words: requests that do not serve it "
            "are read as outside the positioning",
    "main_value": "what concretely changes for them, with a number if you can: core "
                  "requests extend it",
    "alternative": "what they use instead today: requests to become that are another "
                   "product's job",
    "uniqueness": "what only this product does: requests that would erase it are declined",
}

_BOILERPLATE = re.compile(
    r"^(install\w*|usage|getting started|quick ?start|build\w*|license|licen[cs]e|"
    r"contribut\w*|changelog|change log|faq|credits|sponsors?|support\w*|donat\w*|"
    r"table of contents|contents|toc|screenshots?|demo|acknowledg\w*|requirements|"
    r"dependencies|documentation|docs|links?|community|authors?|thanks|roadmap|"
    r"development|testing|tests|release\w*|packag\w*|download\w*|security|code of conduct|"
    r"similar projects|alternatives|related projects|see also|references?|examples?)\b",
    re.I)
_FEATURE_SECTION = re.compile(r"feature|highlight|what (?:it|\w+) (?:does|can do)|"
                              r"capabilit|why \w+|key points|overview of features", re.I)
_LIMIT = re.compile(
    r"\b(?:does not|doesn't|do not|don't|will not|won't|cannot|can't|is not|isn't|"
    r"are not|aren't|never|no plans? to|not (?:a|an) goal|non-goals?|out of scope|"
    r"not (?:designed|intended|meant|planned) (?:to|for)|deliberately|intentionally|"
    r"by design)\b", re.I)
_SUBJECT = re.compile(r"^(?:it|this (?:tool|project|app|application|library|program)|we|"
                      r"{product})\b", re.I)
_INSTEAD = re.compile(r"(?:use|try|see|consider(?: using)?)\s+([^.;,]+?)\s+instead\b|"
                      r"instead,?\s+(?:use|try|see|consider(?: using)?)\s+([^.;]+)", re.I)
_ALTERNATIVE = re.compile(r"\b(?:an? )?(?:alternative|replacement) (?:to|for) "
                          r"((?:[^.;,]|\.(?=\w))+)",  # a dot inside a name: Healthchecks.io
                          re.I)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`*\"'(])")


@dataclass(frozen=True)
class _Line:
    n: int
    text: str


def _lines(text: str) -> list[_Line]:
    """Prose lines of a document, numbered: code blocks, HTML, badges and link
    definitions left out (their line numbers kept for the others)."""
    out: list[_Line] = []
    fence = ""
    rst_code = False
    previous = ""
    for n, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.rstrip()
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        underline = set(stripped) == {"~"} and previous.strip() != ""  # RST, not a fence
        previous = line
        if stripped.startswith(("```", "~~~")) and not underline:
            fence = stripped[:3]
            continue
        if rst_code:
            if stripped and not raw[:1].isspace():
                rst_code = False
            else:
                continue
        if stripped.endswith("::") or stripped.startswith(".. code"):
            rst_code = True
            if stripped.startswith(".."):
                continue
            line = line[:-1]
        if (stripped.startswith(("<", "[![", "![", ".. ", "|")) or
                re.match(r"^\[[^\]]+\]:\s", stripped)):
            out.append(_Line(n, ""))
            continue
        out.append(_Line(n, line))
    return out


def _inline(text: str) -> str:
    """Markdown/RST inline markup to plain words."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"`([^`<]+?)\s*<[^>]+>`_*", r"\1", text)  # RST link
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)  # RST role
    text = re.sub(r"[`*_]{1,3}([^`*_]+)[`*_]{1,3}", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class _Block:
    kind: str  # heading | para | bullet
    text: str
    line: int
    level: int = 0
    lines: tuple[tuple[int, str], ...] = ()  # a paragraph's own lines (number, plain text)

    def line_of(self, sentence: str) -> int:
        """The line a sentence of this block starts on."""
        head = " ".join(sentence.split()[:3])
        for n, text in self.lines:
            if head and head in text:
                return n
        return self.line


_RST_UNDERLINE = re.compile(r"^([=\-~^*+#\"'`])\1{2,}\s*$")


def _blocks(lines: list[_Line]) -> list[_Block]:
    """Headings (ATX, setext, RST), paragraphs and bullet items, in order."""
    blocks: list[_Block] = []
    para: list[_Line] = []
    levels: dict[str, int] = {}

    def flush() -> None:
        if para:
            blocks.append(_Block("para", _inline(" ".join(x.text.strip() for x in para)),
                                 para[0].n, lines=tuple((x.n, _inline(x.text)) for x in para)))
            para.clear()
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.text.strip()
        nxt = lines[i + 1].text.strip() if i + 1 < len(lines) else ""
        if m := re.match(r"^(#{1,6})\s+(.*?)\s*#*$", s):
            flush()
            blocks.append(_Block("heading", _inline(m.group(2)), line.n, len(m.group(1))))
        elif s and _RST_UNDERLINE.match(nxt) and len(nxt) >= len(s) * 0.6 and not \
                s.startswith(("-", "*")):
            flush()
            char = nxt[0]
            level = levels.setdefault(char, len(levels) + 1)
            blocks.append(_Block("heading", _inline(s), line.n, level))
            i += 1
        elif _RST_UNDERLINE.match(s) and not para:  # an RST overline
            pass
        elif m := re.match(r"^\s*(?:[-*+]|\d+[.)])\s+(.*)$", line.text):
            flush()
            blocks.append(_Block("bullet", _inline(m.group(1)), line.n,
                                 len(line.text) - len(line.text.lstrip())))
        elif s:
            if blocks and blocks[-1].kind == "bullet" and not para and line.text[:1].isspace():
                blocks[-1].text += " " + _inline(s)  # a wrapped bullet item
            else:
                para.append(line)
        else:
            flush()
        i += 1
    flush()
    return blocks


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if len(s.strip().split()) >= 3]


def _feature(item: str, source: str) -> Found | None:
    """A bullet item as a feature: a bold or colon-separated head is its name."""
    item = item.strip().rstrip(".")
    if len(item.split()) < 1 or len(item) > 400:
        return None
    m = re.match(r"^(.{2,60}?)\s*(?::|\s[-\u2013\u2014]\s)\s*(.+)$", item)
    if m:
        return Found(m.group(1).strip(), m.group(2).strip(), source)
    words = item.split()
    name = " ".join(words[:6]) + ("..." if len(words) > 6 else "")
    return Found(name, item if len(words) > 6 else "", source)


def _name_of_limit(sentence: str) -> str:
    """A short name for a non-goal from its sentence: what follows the negation."""
    m = _LIMIT.search(sentence)
    rest = sentence[m.end():] if m else sentence
    rest = re.sub(r"^\s*(?:support|provide|offer|include|handle|do|be|aim to|try to|want to|"
                  r"plan to|intend to|have|add)\s+", "", rest, flags=re.I)
    rest = re.split(r"[.;:,(]|\s(?:because|since|as|but|so)\s", rest)[0].strip()
    words = rest.split()
    if not words and m:  # "Calendar sync is out of scope": what comes before it
        words = re.sub(r"\b(?:is|are|will be|remains?)\s*$", "", sentence[:m.start()].strip(),
                       flags=re.I).split()
    if not words:
        words = sentence.split()[:6]
    name = " ".join(words[:7])
    return name[:1].upper() + name[1:] if name else sentence[:40]


def draft(docs: Sequence[Doc], product: str = "") -> Draft:
    """Draft a positioning from ``docs`` (the README first). ``product`` overrides the
    name the first heading gives."""
    out = Draft(product=product)
    seen_features: set[str] = set()
    seen_limits: set[str] = set()
    for d_index, doc in enumerate(docs):
        blocks = _blocks(_lines(doc.text))
        headings = [b for b in blocks if b.kind == "heading"]
        if d_index == 0 and not out.product and headings:
            title = re.split(r"\s[-\u2013\u2014:|]\s|:\s", headings[0].text)[0].strip()
            out.product, out.product_source = title, f"{doc.path}:{headings[0].line}"
        if d_index == 0 and not out.product_source and out.product:
            out.product_source = "(given)"
        # The opening: paragraphs before the first heading after the title.
        if d_index == 0:
            opening: list[_Block] = []
            started = False
            for b in blocks:
                if b.kind == "heading":
                    if started or opening:
                        break
                    started = True
                    continue
                if b.kind == "para" and len(b.text.split()) >= 5:
                    opening.append(b)
                if len(opening) == 2:
                    break
            sentences = [(s, f"{doc.path}:{b.line_of(s)}") for b in opening
                         for s in _sentences(b.text)]
            if sentences:
                # a sentence already in the category's form, naming the product, is the
                # category as written ("For questions, use Discussions" is not)
                names = _names(out.product)
                k = next((n for n, (s, _) in enumerate(sentences) if names and re.match(
                    rf"^for\s.+,\s*use\s+(?:{names})\b", s, re.I)), None)
                first, where = sentences[0 if k is None else k]
                out.category = (first.rstrip(".!") if k is not None
                                else _category(first, out.product))
                out.category_source = where
                out.statements = [Found(s, source=w) for n, (s, w) in enumerate(sentences)
                                  if n != (k or 0)][:5]
        # Features: bullet items and subheadings of a features section.
        section: _Block | None = None
        for k, b in enumerate(blocks):
            if b.kind == "heading":
                if section and b.level <= section.level:
                    section = None
                if _FEATURE_SECTION.search(b.text):
                    section = b
                    continue
                if section and b.level > section.level and not _BOILERPLATE.match(b.text):
                    body = next((x.text for x in blocks[k + 1:k + 3] if x.kind == "para"), "")
                    f = Found(b.text, (_sentences(body) or [body])[0][:300] if body else "",
                              f"{doc.path}:{b.line}")
                    if f.name.lower() not in seen_features:
                        seen_features.add(f.name.lower())
                        out.features.append(f)
            elif b.kind == "bullet" and section and b.level == 0:
                f = _feature(b.text, f"{doc.path}:{b.line}")
                if f and f.name.lower() not in seen_features:
                    seen_features.add(f.name.lower())
                    out.features.append(f)
        # Non-goals and the alternative: sentences anywhere in the prose.
        subject = re.compile(_SUBJECT.pattern.format(product=re.escape(out.product or "x")),
                             re.I)
        for b in blocks:
            if b.kind == "heading":
                continue
            for s in _sentences(b.text) or ([b.text] if b.kind == "bullet" else []):
                where = f"{doc.path}:{b.line_of(s)}"
                if out.alternative is None and (m := _ALTERNATIVE.search(s)):
                    out.alternative = Found(m.group(1).strip(), s, where)
                if not _LIMIT.search(s):
                    continue
                strong = re.search(r"out of scope|non-goal|not (?:a|an) goal|deliberately|"
                                   r"intentionally|by design|no plans? to|instead", s, re.I)
                if not (strong or subject.search(s.strip())):
                    continue
                if re.search(r"\b(?:you|your)\b", s, re.I) and not strong:
                    continue  # an instruction to the reader, not a limit of the product
                key = s.lower()
                if key in seen_limits:
                    continue
                seen_limits.add(key)
                m = _INSTEAD.search(s)
                instead = (m.group(1) or m.group(2)).strip() if m else ""
                out.non_goals.append(Found(_name_of_limit(s), s, where, instead))
    if not out.features:  # no features section: the document's own topic headings
        for doc in docs[:1]:
            for b in _blocks(_lines(doc.text))[1:]:
                if b.kind == "heading" and b.level >= 2 and not _BOILERPLATE.match(b.text) \
                        and b.text.lower() not in seen_features:
                    seen_features.add(b.text.lower())
                    out.features.append(Found(b.text, "", f"{doc.path}:{b.line}"))
    return out


def _names(product: str) -> str:
    """How a README names the product, as a regex alternation: the whole name or its first
    word ('Quillio is...' for Quillio Notes); "" when there is no name."""
    words = product.split()
    return "|".join(sorted({re.escape(product.strip()), re.escape(words[0])})) if words else ""


def _category(sentence: str, product: str) -> str:
    """'X is a fast tool for Y.' -> 'For a fast tool for Y, use X' (a draft to reword as
    the customer's need)."""
    sentence = sentence.rstrip(".!")
    names = _names(product)
    m = re.match(rf"^(?:{names}|it|this \w+)\s+(?:is|are)\s+(.+)$", sentence,
                 re.I) if names else None
    what = m.group(1) if m else sentence
    return f"For {what}, use {product or 'the product'}"


def render(d: Draft, sources: Sequence[str] = ()) -> str:
    """The draft as a commented positioning file (YAML)."""
    def q(text: str) -> str:  # a JSON string is a valid YAML double-quoted scalar
        return json.dumps(text, ensure_ascii=False)
    lines = ["# scopeguard positioning file, DRAFTED by `scopeguard init --from-docs` from "
             + ", ".join(sources) + ".",
             "# Every entry says where it came from; every empty field says what to write.",
             "# Reword what the docs say as the customer's need, then: scopeguard check", ""]
    lines += [f"# from {d.product_source}" if d.product_source else
              "# TODO product: the product's name", f"product: {q(d.product or 'TODO')}"]
    if d.category:
        lines += [f"# from {d.category_source} (reword as: For <what the customer needs>, "
                  "use <product>)", f"category: {q(d.category)}"]
    else:
        lines += ["# TODO category: For <what the customer needs to do>, use <product>",
                  f"category: {q('For TODO, use ' + (d.product or 'the product'))}"]
    for key in ("target_customer", "need", "main_value"):
        lines += [f"# TODO {key}: {TODO[key]}", f'{key}: ""']
    if d.alternative:
        lines += [f"# from {d.alternative.source}", f"alternative: {q(d.alternative.name)}"]
    else:
        lines += [f"# TODO alternative: {TODO['alternative']}", 'alternative: ""']
    lines += [f"# TODO uniqueness: {TODO['uniqueness']}", 'uniqueness: ""', ""]
    lines.append("statements:" + ("" if d.statements else " []"))
    for s in d.statements:
        lines += [f"  # from {s.source}", f"  - {q(s.name)}"]
    lines += ["", "features:" + ("" if d.features else " []  # TODO: what the product does "
                                 "today, one entry per capability")]
    for f in d.features:
        lines += [f"  # from {f.source}", f"  - name: {q(f.name)}"]
        if f.description:
            lines.append(f"    description: {q(f.description)}")
    lines += ["", "non_goals:" + ("" if d.non_goals else " []  # TODO: what it will not do "
                                  "(the asks you keep declining) and where to point people")]
    for n in d.non_goals:
        lines += [f"  # from {n.source}", f"  - name: {q(n.name)}",
                  f"    description: {q(n.description)}"]
        if n.instead:
            lines.append(f"    instead: {q(n.instead)}")
    return "\n".join(lines) + "\n"
