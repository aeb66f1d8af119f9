"""The audit report as a terminal table, JSON, CSV, Markdown or one self-contained HTML file.

The HTML file carries its own CSS and inline SVG charts: no scripts, fonts or images
are fetched, so it opens anywhere and can be mailed as an attachment.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterator
from typing import Any

from .audit import AuditItem, AuditReport, promoted_verdict
from .markup import csv_cell, json_safe, md_link, md_text, no_controls, plain, safe_url
from .positioning import LABELS

COLOURS = {"core": "#2e7d32", "generalizable": "#f9a825", "one_off": "#c62828"}
TITLES = {"core": "core", "generalizable": "generalizable", "one_off": "one-off"}
FORMATS = ("table", "json", "csv", "markdown", "html")


def escape(text: str, quote: bool = True) -> str:
    """HTML text: markup escaped, and control characters and bidirectional overrides
    (shown by a browser: a title spelt backwards) dropped."""
    return html.escape(no_controls(text), quote)


def _request(i: AuditItem) -> dict[str, Any]:
    return {
        "id": i.request.id, "title": i.request.title, "url": i.request.url,
        "customer": i.request.customer, "created_at": i.request.created_at,
        "label": i.label, "classified_as": i.classified_as, "promoted": i.promoted,
        "confidence": i.verdict.confidence, "rule": i.verdict.rule,
        "certainty": i.verdict.certainty, "needs_decision": i.verdict.needs_decision,
        "step": i.verdict.step, "anchor": i.verdict.anchor,
        "input_class": i.verdict.input_class, "cluster": i.cluster,
        "duplicates": list(i.duplicates), "reasons": list(promoted_verdict(i).reasons),
        "nearest_feature": i.verdict.features[0].name if i.verdict.features else None,
        "signals": i.verdict.signals,
    }


def as_dict(report: AuditReport, requests: bool = True) -> dict[str, Any]:
    """The report as JSON data (``requests=False``: an empty list in their place)."""
    return {
        "product": report.product,
        "summary": report.summary,
        "counts": report.counts,
        "needs_decision": report.pending,
        "min_customers": report.min_customers,
        "neighbour_search": report.search,
        "requests": [_request(i) for i in report.items] if requests else [],
        "clusters": [{"id": c.id, "leader": c.leader, "title": c.title, "members": c.members,
                      "customers": c.customers, "distinct_customers": len(c.customers),
                      "promoted": c.promoted} for c in report.clusters],
        "drift": [{"month": m, **counts} for m, counts in report.drift],
        "one_off_customers": [{"customer": c, "requests": n} for c, n in report.one_off_customers],
        "non_goals": [{"non_goal": g.name, "nearest": [{"id": i, "title": t, "score": s}
                                                        for i, t, s in g.requests]}
                      for g in report.non_goals],
        "skipped": [{"id": i, "why": w} for i, w in report.skipped],
    }


_SLOT = "__scopeguard_requests__"
_PART = 1 << 16  # characters a streamed part gathers before it is handed on


def to_json(report: AuditReport) -> str:
    return "".join(json_parts(report))


def json_parts(report: AuditReport) -> Iterator[str]:
    """``json.dumps(as_dict(report), indent=2)``, the same text, made one request at a
    time: the whole report as one dict, then as one indented encoding's millions of small
    pieces, was the largest transient of a big audit (14 KB a request)."""
    data = as_dict(report, requests=False)
    if not report.items:
        yield json_safe(json.dumps(data, indent=2, ensure_ascii=False))
        return
    data["requests"] = [_SLOT]
    head, *rest = json.dumps(data, indent=2, ensure_ascii=False).split(f'\n    "{_SLOT}"\n')
    if len(rest) != 1:  # the slot's line was not where it always is: the plain way
        yield json_safe(json.dumps(as_dict(report), indent=2, ensure_ascii=False))
        return
    yield json_safe(head) + "\n"
    for n, item in enumerate(report.items):
        text = json_safe(json.dumps(_request(item), indent=2, ensure_ascii=False))
        yield (",\n    " if n else "    ") + text.replace("\n", "\n    ")
    yield "\n" + json_safe(rest[0])


def to_csv(report: AuditReport) -> str:
    return "".join(csv_parts(report))


def csv_parts(report: AuditReport) -> Iterator[str]:
    """Every cell quoted, and none that a spreadsheet would run as a formula (a title like
    ``=HYPERLINK(...)`` is written ``'=HYPERLINK(...)``: OWASP's CSV injection advice)."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)

    def flush() -> str:
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text

    writer.writerow(["id", "title", "customer", "created_at", "label", "classified_as",
                     "confidence", "rule", "step", "anchor", "input_class", "cluster",
                     "duplicates", "url", "certainty", "needs_decision"])
    for i in report.items:
        writer.writerow([csv_cell(cell) for cell in (
            i.request.id, i.request.title, i.request.customer, i.request.created_at, i.label,
            i.verdict.label, f"{i.verdict.confidence:.3f}", i.verdict.rule,
            str(i.verdict.step), i.verdict.anchor, i.verdict.input_class, i.cluster or "",
            " ".join(i.duplicates), i.request.url,
            "" if i.verdict.certainty is None else f"{i.verdict.certainty:.3f}",
            "yes" if i.verdict.needs_decision else "")])
        if out.tell() >= _PART:
            yield flush()
    yield flush()


def _clip(text: str, n: int) -> str:
    """Terminal text: one line, no control characters, at most ``n`` characters."""
    return plain(text, n)


def to_table(report: AuditReport, width: int = 110) -> str:
    return "".join(table_parts(report, width))


def table_parts(report: AuditReport, width: int = 110) -> Iterator[str]:
    title_w = max(20, width - 60)
    yield (f"{'id':10s} {'label':13s} {'conf':>5s} {'rule':17s} {'cluster':>7s}  title\n"
           + "-" * min(width, 60 + title_w))
    for i in report.items:
        mark = "*" if i.promoted else " "
        yield (f"\n{_clip(i.request.id, 10):10s} {i.label:13s}{mark}{i.verdict.confidence:5.2f} "
               f"{i.verdict.rule:17s} {str(i.cluster or ''):>7s}  "
               f"{_clip(i.request.title, title_w)}")
    lines = [""]
    if report.wanted_clusters:
        lines.append(f"clusters wanted by >= {report.min_customers} distinct customers:")
        for c in report.wanted_clusters[:10]:
            lines.append(f"  #{c.id:<3d} {len(c.customers)} customers, {c.size} requests: "
                         f"{_clip(c.title, 60)} ({plain(', '.join(c.members[:6]))})")
        lines.append("")
    dupes = []
    for i in report.items:
        dupes += [(i.request.id, d) for d in i.duplicates if i.request.id < d]
        if len(dupes) >= 20:
            break
    if dupes:
        lines.append("possible duplicates: " + plain(", ".join(f"{a}~{b}" for a, b in dupes[:20])))
    if any(i.promoted for i in report.items):
        lines.append("* promoted from one_off by demand across customers")
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} non-feature issue(s)")
    lines.append(f"neighbours: {report.search}")
    lines.append(report.summary)
    yield "\n" + "\n".join(lines)


def to_markdown(report: AuditReport) -> str:
    return "".join(markdown_parts(report))


def markdown_parts(report: AuditReport) -> Iterator[str]:
    """The report as Markdown; everything requesters (and the positioning file) wrote is
    escaped with :mod:`scopeguard.markup`: no markup, links other than http(s), HTML or
    @mentions can come from it."""
    counts = report.counts
    out = [f"# Scope audit: {_md(report.product)}", "", f"**{_md(report.summary)}**", "",
           f"Demand neighbours: {_md(report.search)}.", "",
           "| label | requests |", "|---|---|"]
    out += [f"| {TITLES[k]} | {counts[k]} |" for k in LABELS]
    out += ["", "## Scope drift by month", "", "| month | core | generalizable | one-off |",
            "|---|---|---|---|"]
    out += [f"| {_md(m)} | {c['core']} | {c['generalizable']} | {c['one_off']} |"
            for m, c in report.drift]
    out += ["", f"## Clusters wanted by >= {report.min_customers} customers", ""]
    if report.wanted_clusters:
        out += ["| cluster | customers | requests | title |", "|---|---|---|---|"]
        out += [f"| #{c.id} | {len(c.customers)} | {_md(', '.join(c.members))} | "
                f"{_md(c.title)} |" for c in report.wanted_clusters]
    else:
        out.append("None yet.")
    out += ["", "## Top one-off customers", ""]
    out += [f"- {_md(c)}: {n}" for c, n in report.one_off_customers[:10]] or ["None."]
    out += ["", "## Requests nearest each non-goal", ""]
    for g in report.non_goals:
        out.append(f"- **{_md(g.name)}**: " + ", ".join(f"{_md(i)} {_md(t, 50)} ({s:.2f})"
                                                       for i, t, s in g.requests))
    out += ["", "## Requests", "", "| id | label | confidence | cluster | duplicates | title |",
            "|---|---|---|---|---|---|"]
    yield "\n".join(out) + "\n"
    for i in report.items:
        label = TITLES[i.label] + (" (promoted)" if i.promoted else "")
        yield (f"| {md_link(i.request.id, i.request.url)} | {label} | "
               f"{i.verdict.confidence:.2f} | {i.cluster or ''} | "
               f"{_md(', '.join(i.duplicates))} | {_md(i.request.title, 70)} |\n")


def _md(text: str, limit: int | None = None) -> str:
    return md_text(text, limit)


# --- HTML ------------------------------------------------------------------------------------


def _drift_chart(report: AuditReport) -> str:
    months = report.drift
    width, height, left, bottom = 760, 260, 40, 40
    bar_w = max(4, (width - left - 10) / max(1, len(months)) - 4)
    parts = [f'<svg class="chart" id="drift-chart" viewBox="0 0 {width} {height + 30}" '
             f'role="img" aria-label="Share of labels by month">']
    for pct in (0, 50, 100):
        y = 10 + (height - bottom) * (1 - pct / 100)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{pct}%</text>')
    for n, (month, counts) in enumerate(months):
        total = sum(counts.values()) or 1
        x = left + 4 + n * (bar_w + 4)
        y = 10 + (height - bottom)
        for label in ("one_off", "generalizable", "core"):
            h = (height - bottom) * counts[label] / total
            y -= h
            if h:
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                             f'fill="{COLOURS[label]}"><title>{escape(month)}: {counts[label]} '
                             f'{TITLES[label]} of {total}</title></rect>')
        if len(months) <= 24 or n % max(1, len(months) // 12) == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 26}" '
                         f'text-anchor="end" transform="rotate(-45 {x + bar_w / 2:.1f} '
                         f'{height - bottom + 26})">{escape(month)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(chart_id: str, rows: list[tuple[str, int]], colour: str, label: str) -> str:
    if not rows:
        return f'<p class="empty" id="{chart_id}">None.</p>'
    width, row_h, left = 760, 26, 300
    top = max(n for _, n in rows) or 1
    parts = [f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {row_h * len(rows) + 10}" '
             f'role="img" aria-label="{escape(label)}">']
    for k, (name, n) in enumerate(rows):
        y = 5 + k * row_h
        w = (width - left - 40) * n / top
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">'
                     f'{escape(_clip(name, 42))}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
                     f'fill="{colour}"><title>{escape(name)}: {n}</title></rect>'
                     f'<text x="{left + w + 6:.1f}" y="{y + 16}">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:60em;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.summary{font-size:1.1em;background:#f5f5f5;padding:.8em;border-left:4px solid #555}
.chart{width:100%;height:auto}.chart text{font-size:11px;fill:#333}.grid{stroke:#ddd}
.legend span{display:inline-block;margin-right:1.5em}
.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#fafafa}
.core{color:#2e7d32}.generalizable{color:#a67c00}.one_off{color:#c62828}.empty{color:#777}
"""


def to_html(report: AuditReport) -> str:
    return "".join(html_parts(report))


def html_parts(report: AuditReport) -> Iterator[str]:
    counts = report.counts
    legend = "".join(f'<span><i style="background:{COLOURS[k]}"></i>{TITLES[k]} '
                     f'({counts[k]})</span>' for k in LABELS)
    with_generalizable = {i.cluster for i in report.items if i.label == "generalizable"}
    generalizable = [(f"#{c.id} {c.title}", len(c.customers)) for c in report.clusters
                     if c.promoted or c.id in with_generalizable][:10]

    def row(i: AuditItem) -> str:
        title = escape(i.request.title)
        href = safe_url(i.request.url)  # http(s) only: no javascript: or data: links
        link = (f'<a href="{escape(href, quote=True)}">{escape(i.request.id)}</a>'
                if href else escape(i.request.id))
        why = escape(" ".join(promoted_verdict(i).reasons[:2]))
        return (f'<tr><td>{link}</td><td class="{i.label}">{TITLES[i.label]}'
                f'{" ↑" if i.promoted else ""}</td><td>{i.verdict.confidence:.2f}</td>'
                f'<td>{escape(i.request.customer)}</td><td>{i.cluster or ""}</td>'
                f'<td>{escape(", ".join(i.duplicates))}</td><td>{title}'
                f'<br><small>{why}</small></td></tr>')

    non_goals = "".join(
        f"<tr><td>{escape(g.name)}</td><td>" + "<br>".join(
            f"{escape(i)} {escape(_clip(t, 70))} ({s:.2f})" for i, t, s in g.requests)
        + "</td></tr>" for g in report.non_goals) or '<tr><td colspan="2">No non-goals.</td></tr>'
    yield f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Scope audit: {escape(report.product)}</title><style>{_CSS}</style></head>
<body>
<h1>Scope audit: {escape(report.product)}</h1>
<p class="summary" id="summary">{escape(report.summary)}</p>
<p class="legend">Demand neighbours: {escape(report.search)}.</p>
<h2>Scope drift: share of core, generalizable and one-off requests by month</h2>
<p class="legend">{legend}</p>
{_drift_chart(report)}
<h2>Top generalizable clusters (distinct customers)</h2>
{_bar_chart("clusters-chart", generalizable, COLOURS["generalizable"], "Clusters by customers")}
<h2>Top one-off customers (requests)</h2>
{_bar_chart("customers-chart", report.one_off_customers[:10], COLOURS["one_off"],
            "One-off requests by customer")}
<h2>Requests nearest each non-goal</h2>
<table id="non-goals"><tr><th>non-goal</th><th>nearest requests (cosine)</th></tr>{non_goals}</table>
<h2>All requests</h2>
<table id="requests"><tr><th>id</th><th>label</th><th>confidence</th><th>customer</th>
<th>cluster</th><th>duplicates</th><th>title and reasons</th></tr>
"""
    yield from (row(i) for i in report.items)
    yield f"""
</table>
<p><small>↑ promoted from one-off: its cluster is wanted by at least {report.min_customers}
distinct customers. Generated by scopeguard.</small></p>
</body></html>
"""


def render_report(report: AuditReport, fmt: str) -> str:
    return "".join(report_parts(report, fmt))


def report_parts(report: AuditReport, fmt: str) -> Iterator[str]:
    """The report in ``fmt``, a part at a time (a million requests' report is gigabytes:
    the audit writes the parts as they come)."""
    parts = {"json": json_parts, "csv": csv_parts, "markdown": markdown_parts,
             "html": html_parts}.get(fmt, table_parts)
    return parts(report)
