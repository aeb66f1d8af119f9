"""Verdicts as text, JSON and Markdown. The Markdown form is what trackers get as a comment."""

from __future__ import annotations

import json
import re
from typing import Any

from .classify import Verdict

COMMENT_MARKER = "<!-- scopeguard:verdict -->"
# The second hidden line records the label scopeguard gave, so a later run can tell a
# human's relabel from its own label: parse it with LABEL_MARKER.
LABEL_MARKER = re.compile(r"<!-- scopeguard:label=(\w+) confidence=([\d.]+) -->")


def marker_lines(lines: list[str]) -> int:
    """How many of a comment's ``lines`` are the hidden marker lines it opens with."""
    return 2 if len(lines) > 1 and LABEL_MARKER.search(lines[1]) else 1


def marked_label(text: str) -> str | None:
    """The label a scopeguard comment's hidden marker records, or None."""
    found = LABEL_MARKER.search(text)
    return found.group(1) if found else None

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


def to_json(verdict: Verdict) -> str:
    return json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False)


def to_text(v: Verdict, label_name: str | None = None) -> str:
    lines = [f"{v.request_id}: {v.title}".strip(": "),
             f"  verdict: {label_name or v.label}  (confidence {v.confidence:.0%}, "
             f"rule: {v.rule}, decided by {v.decided_by})",
             f"  input class: {CLASS_TITLES.get(v.input_class, v.input_class)}"]
    lines += [f"  - {r}" for r in v.reasons]
    lines.append("  positioning:")
    lines += [f"    {m.score:.2f}  {m.name}: {m.text[:90]}" for m in v.positioning]
    lines.append("  features:")
    lines += [f"    {m.score:.2f}  {m.name}" for m in v.features]
    if v.non_goal:
        lines.append(f"  nearest non-goal: {v.non_goal.score:.2f}  {v.non_goal.name}")
    lines.append(f"  customers asking: {len(v.customers)} ({', '.join(v.customers[:8])})")
    for n in v.similar[:5]:
        dup = "  [duplicate]" if n.duplicate else ""
        lines.append(f"    {n.score:.2f}  {n.id} {n.title[:60]} ({n.customer}){dup}")
    if v.custom_signals:
        lines.append("  custom-work signals: " +
                     ", ".join(f"{c.name} '{c.evidence}'" for c in v.custom_signals))
    lines.append("  signals: " + ", ".join(f"{k}={val:g}" for k, val in v.signals.items()))
    return "\n".join(lines)


def _cell(text: str, limit: int = 100) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_markdown(v: Verdict, label_name: str | None = None, product: str = "") -> str:
    """The explanatory comment: verdict, reasons, evidence tables, signals."""
    title = LABEL_TITLES.get(v.label, v.label)
    label_shown = f" (`{label_name}`)" if label_name else ""
    out = [COMMENT_MARKER,
           f"<!-- scopeguard:label={v.label} confidence={v.confidence:.3f} -->",
           f"### scopeguard: **{title}**{label_shown}",
           "",
           f"{LABEL_ADVICE.get(v.label, '')} Confidence {v.confidence:.0%}"
           f"{' for ' + product if product else ''}; input class: "
           f"{CLASS_TITLES.get(v.input_class, v.input_class)}.",
           ""]
    out += [f"- {r}" for r in v.reasons]
    out += ["", "| evidence | name | score |", "|---|---|---|"]
    for m in v.positioning[:2]:
        out.append(f"| positioning | {_cell(m.name)}: {_cell(m.text, 80)} | {m.score:.2f} |")
    for m in v.features[:3]:
        out.append(f"| feature | {_cell(m.name, 80)} | {m.score:.2f} |")
    if v.non_goal:
        out.append(f"| non-goal | {_cell(v.non_goal.name, 80)} | {v.non_goal.score:.2f} |")
    out.append("")
    if v.similar:
        out.append(f"**Similar requests** ({len(v.customers)} distinct customers asked, "
                   "this one included):")
        out.append("")
        for n in v.similar[:5]:
            ref = f"[{n.id}]({n.url})" if n.url else n.id
            dup = " (possible duplicate)" if n.duplicate else ""
            out.append(f"- {ref} {_cell(n.title, 80)} ({_cell(n.customer, 40)}, {n.score:.2f}){dup}")
        out.append("")
    else:
        out += ["No similar requests from other customers yet.", ""]
    if v.custom_signals:
        out.append("**Custom-work signals:** " + ", ".join(
            f"{c.name} (\"{_cell(c.evidence, 60)}\")" for c in v.custom_signals))
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
