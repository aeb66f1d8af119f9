"""Verdicts as text, JSON and Markdown. The Markdown form is what trackers get as a comment.

A comment scopeguard writes carries hidden marker lines (HTML comments): the first says
"this is scopeguard's verdict", the next records the label it gave (and, on GitHub, a
maintainer's label that stands). They open the Markdown (GitHub hides them) or, in
Jira, which cannot hide text, end it as a grey footer. :func:`read_markers` reads them
from those places only, never from the rest of a body, and only a comment scopeguard's
own account wrote is read at all (the integrations check the author). Everything a
requester wrote is escaped (:mod:`scopeguard.markup`), so no marker can be formed from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .classify import STEP_NAMES, Verdict
from .markup import json_safe, md_code, md_link, md_text, plain

COMMENT_MARKER = "<!-- scopeguard:verdict -->"
# The second hidden line records the label scopeguard gave, so a later run can tell a
# human's relabel from its own label: parse it with LABEL_MARKER.
PENDING = "needs_decision"  # the label marker of a verdict whose label is not on the issue
LABEL_MARKER = re.compile(r"<!-- scopeguard:label=(\w+) confidence=([\d.]+) -->")
# A maintainer's scope label that stands (GitHub), recorded so later runs keep it even
# when scopeguard's own verdict comes to agree with it.
HUMAN_MARKER = re.compile(r"<!-- scopeguard:human-label=(\w+)(?: by=(\S+))? -->")
# The label a withheld verdict leaned to (its label marker says PENDING), so that the
# maintainer's decision can be recorded next to it.
LEANING_MARKER = re.compile(r"<!-- scopeguard:leaning=(\w+) -->")
_ANY_MARKER = re.compile(r"<!-- scopeguard:[^<>]*? -->")
COMMENT_LIMIT = 65_536  # characters: GitHub refuses a longer comment
CUT_NOTE = "*(cut: longer than GitHub's limit of 65,536 characters.)*"
_FOOTER_WRAP = re.compile(r"^\{color(?::[^}]*)?\}|\{color\}$")


@dataclass(frozen=True)
class Markers:
    """What a scopeguard comment's hidden marker lines say."""

    verdict: bool = False  # the comment opens (or, in Jira, ends) with COMMENT_MARKER
    label: str | None = None
    confidence: float | None = None
    human: str | None = None  # a maintainer's label that stands (its key)
    human_by: str = ""
    leaning: str | None = None  # what a withheld verdict leaned to


def _parse(markers: list[str]) -> Markers:
    if not markers or markers[0] != COMMENT_MARKER:
        return Markers()
    label = confidence = human = leaning = None
    by = ""
    for marker in markers[1:]:
        if found := LABEL_MARKER.fullmatch(marker):
            label, confidence = found.group(1), float(found.group(2))
        elif found := HUMAN_MARKER.fullmatch(marker):
            human, by = found.group(1), found.group(2) or ""
        elif found := LEANING_MARKER.fullmatch(marker):
            leaning = found.group(1)
    return Markers(True, label, confidence, human, by, leaning)


def read_header(text: str) -> Markers:
    """The marker lines a scopeguard comment opens with (GitHub: Markdown hides them)."""
    head = []
    for line in (text or "").lstrip("\ufeff \t\r\n").split("\n"):
        line = line.strip()
        if not _ANY_MARKER.fullmatch(line):
            break
        head.append(line)
    return _parse(head)


def read_footer(text: str) -> Markers:
    """The marker line a scopeguard comment ends with (Jira, which cannot hide text: a grey
    footer of markers and nothing else)."""
    lines = (text or "").split("\n")
    tail = next((line.strip() for line in reversed(lines) if line.strip()), "")
    tail = _FOOTER_WRAP.sub("", _FOOTER_WRAP.sub("", tail)).strip()
    found = _ANY_MARKER.findall(tail)
    if found and not _ANY_MARKER.sub("", tail).strip():
        return _parse(found)
    return Markers()


def read_markers(text: str) -> Markers:
    """The markers of a comment in either tracker's layout: its header lines, else its
    footer line. Markers anywhere else in ``text`` are ignored. (The integrations read only
    their own layout: :func:`read_header` on GitHub, :func:`read_footer` on Jira.)"""
    header = read_header(text)
    return header if header.verdict else read_footer(text)


def marker_lines(lines: list[str]) -> int:
    """How many of a comment's ``lines`` are the hidden marker lines it opens with."""
    count = 0
    for line in lines:
        if not _ANY_MARKER.fullmatch(line.strip()):
            break
        count += 1
    return max(1, count) if lines and lines[0].strip() == COMMENT_MARKER else 0


def marked_label(text: str) -> str | None:
    """The label a scopeguard comment's marker lines record, or None."""
    return read_markers(text).label

LABEL_TITLES = {"core": "Core", "generalizable": "Generalizable", "one_off": "One-off custom"}
LABEL_ADVICE = {
    "core": "Fits the positioning and extends what the product is for.",
    "generalizable": "Not core today, but a general form would serve the target customers: "
                     "a candidate to build for everyone.",
    "one_off": "One customer's situation, outside the positioning: decline, point to an "
               "existing mechanism, or offer it as custom work.",
}
CLASS_TITLES = {"fault_correction": "fault correction", "necessity": "necessity (must-do)",
                "market_driven": "market-driven growth", "opportunistic": "opportunistic (new deal)",
                "responsiveness": "responsiveness to customer feedback"}


def step_line(v: Verdict, escape: Any) -> str:
    """``2 (already served by a feature): 'CSV export'``: the step of the rule the verdict
    stands for and the anchor of the product file it rests on (``escape``d: the file's
    names are not scopeguard's own text)."""
    line = f"{v.step} ({STEP_NAMES.get(v.step, '?')})"
    return line + (f": '{escape(v.anchor, 160)}'" if v.anchor else "")


def fit_markdown(text: str, limit: int = COMMENT_LIMIT) -> str:
    """``text``, or when longer than ``limit`` characters its start cut at a line end, a
    code fence left open closed, and a note. The marker lines open a comment, so they stay."""
    if len(text) <= limit:
        return text
    cut = text[:max(0, limit - len(CUT_NOTE) - 2)]
    cut = cut[:cut.rfind("\n")] if "\n" in cut else ""
    fence = ""
    for line in cut.split("\n"):
        found = re.match(r"`{3,}", line)
        if found and not fence:
            fence = found.group(0)
        elif found and line.strip() == fence:
            fence = ""
    if fence:
        cut = cut[:max(0, limit - len(CUT_NOTE) - len(fence) - 3)] + "\n" + fence
    return (cut + "\n\n" + CUT_NOTE)[:limit]


def to_json(verdict: Verdict) -> str:
    return json_safe(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False))


def to_text(v: Verdict, label_name: str | None = None) -> str:
    """The verdict for a terminal: what others wrote loses its control characters."""
    lines = [plain(f"{v.request_id}: {v.title}").strip(": "),
             f"  verdict: {plain(label_name or v.label)}  (confidence {v.confidence:.0%}, "
             f"rule: {v.rule}, decided by {v.decided_by})",
             f"  input class: {CLASS_TITLES.get(v.input_class, v.input_class)}"]
    if v.needs_decision:
        measured = "unmeasured" if v.certainty is None else f"{v.certainty:.0%}"
        lines.append(f"  needs a decision: it leans {v.label}; certainty {measured}")
    if v.step:
        lines.append(f"  rule step: {step_line(v, plain)}")
    lines += [f"  - {plain(r)}" for r in v.reasons]
    lines.append("  positioning:")
    lines += [f"    {m.score:.2f}  {plain(m.name)}: {plain(m.text, 90)}" for m in v.positioning]
    lines.append("  features:")
    lines += [f"    {m.score:.2f}  {plain(m.name)}" for m in v.features]
    if v.non_goal:
        lines.append(f"  nearest non-goal: {v.non_goal.score:.2f}  {plain(v.non_goal.name)}")
    lines.append(f"  customers asking: {len(v.customers)} "
                 f"({plain(', '.join(v.customers[:8]))})")
    for n in v.similar[:5]:
        dup = "  [duplicate]" if n.duplicate else ""
        lines.append(f"    {n.score:.2f}  {plain(n.id)} {plain(n.title, 60)} "
                     f"({plain(n.customer)}){dup}")
    if v.custom_signals:
        lines.append("  custom-work signals: " +
                     ", ".join(f"{c.name} '{plain(c.evidence)}'" for c in v.custom_signals))
    lines.append("  signals: " + ", ".join(f"{k}={val:g}" for k, val in v.signals.items()))
    return "\n".join(lines)


def to_markdown(v: Verdict, label_name: str | None = None, product: str = "",
                pending: bool = False, own: bool = True, leaning: str | None = None) -> str:
    """The explanatory comment: verdict, reasons, evidence tables, signals.

    Every text that is not scopeguard's own (titles, customers, quotes, URLs, and the
    positioning file's names) is escaped with :mod:`scopeguard.markup`: it shows as
    written, forms no markup or marker, and notifies nobody. ``pending``: the caller gave
    the needs-decision label instead of ``label_name``; the headline says so. ``leaning``:
    what scopeguard leaned to when it asked for the decision a person's label now settles
    (kept in the leaning marker, so a later change of that decision is recorded as one).
    """
    title = LABEL_TITLES.get(v.label, v.label)
    label_shown = f" ({md_code(label_name)})" if label_name else ""
    # ``pending``: the tracker got the needs-decision label instead of ``label_name``.
    headline = (f"**Needs a decision**: leans {title}{label_shown}" if pending
                else f"**{title}**{label_shown}")
    # A withheld label (``pending``), or a verdict shown beside a person's label that stands
    # (``own=False``), is not a label scopeguard put on the issue: the marker says so, so
    # that a person's scope label, even the one scopeguard leans to, is never read as its own.
    marked = v.label if own and not pending else PENDING
    leaning = v.label if pending else leaning
    out = [COMMENT_MARKER,
           f"<!-- scopeguard:label={marked} confidence={v.confidence:.3f} -->",
           *([f"<!-- scopeguard:leaning={leaning} -->"] if leaning else []),
           f"### scopeguard: {headline}",
           "",
           f"{LABEL_ADVICE.get(v.label, '')} Confidence {v.confidence:.0%}"
           f"{' for ' + md_text(product) if product else ''}; input class: "
           f"{CLASS_TITLES.get(v.input_class, v.input_class)}.",
           ""]
    if v.step:
        out += [f"**Rule step {step_line(v, md_text)}**", ""]
    out += [f"- {md_text(r, 600)}" for r in v.reasons]  # a reason may quote a requester
    out += ["", "| evidence | name | score |", "|---|---|---|"]
    for m in v.positioning[:2]:
        out.append(f"| positioning | {md_text(m.name, 100)}: {md_text(m.text, 80)} | "
                   f"{m.score:.2f} |")
    for m in v.features[:3]:
        out.append(f"| feature | {md_text(m.name, 80)} | {m.score:.2f} |")
    if v.non_goal:
        out.append(f"| non-goal | {md_text(v.non_goal.name, 80)} | {v.non_goal.score:.2f} |")
    out.append("")
    if v.similar:
        out.append(f"**Similar requests** ({len(v.customers)} distinct customers asked, "
                   "this one included):")
        out.append("")
        for n in v.similar[:5]:
            dup = " (possible duplicate)" if n.duplicate else ""
            out.append(f"- {md_link(n.id, n.url)} {md_text(n.title, 80)} "
                       f"({md_text(n.customer, 40)}, {n.score:.2f}){dup}")
        out.append("")
    else:
        out += ["No similar requests from other customers yet.", ""]
    if v.precedent:
        pr = v.precedent
        when = f", {md_text(pr.decided_at[:7])}" if pr.decided_at else ""
        out += [f"**Precedent:** {md_link(pr.id, pr.url)} {md_text(pr.title, 80)} "
                f"({pr.decision}: {md_text(pr.reason, 60)}{when}; similarity {pr.score:.2f})",
                ""]
    if v.custom_signals:
        out.append("**Custom-work signals:** " + ", ".join(
            f"{c.name} (\"{md_text(c.evidence, 60)}\")" for c in v.custom_signals))
        out.append("")
    sig = ", ".join(f"{k} {val:g}" for k, val in v.signals.items())
    out += ["<details><summary>Signals used</summary>", "", f"{sig}; decided by "
            f"{v.decided_by} ({v.rule}).", "", "</details>", "",
            "<sub>Disagree? Replace the scope label; scopeguard records the correction and "
            "never fights a human's label.</sub>"]
    return "\n".join(out)


def render(v: Verdict, fmt: str, label_name: str | None = None, product: str = "") -> str:
    if fmt == "json":
        return to_json(v)
    if fmt == "markdown":
        return to_markdown(v, label_name, product)
    return to_text(v, label_name)


def summary_dict(verdicts: list[Verdict]) -> dict[str, Any]:
    counts = {k: 0 for k in LABEL_TITLES}
    for v in verdicts:
        counts[v.label] += 1
    return {"total": len(verdicts), "counts": counts}
