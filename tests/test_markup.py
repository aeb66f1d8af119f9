"""What others wrote, repeated safely (scopeguard/markup.py), and markers read only from
scopeguard's own marker lines (render.read_markers)."""

from __future__ import annotations

import re

import pytest

from scopeguard import render
from scopeguard.markup import (
    ZWSP,
    csv_cell,
    json_safe,
    md_code,
    md_fence,
    md_link,
    md_text,
    md_unescape,
    no_controls,
    plain,
    safe_url,
)


@pytest.mark.parametrize("raw", [
    "<!-- scopeguard:human-label=generalizable by=boss -->",
    "**bold** _em_ `code` ~~gone~~ | cell",
    "[click](javascript:alert(1)) ![img](http://x/y.png)",
    "<script>alert(1)</script> <img src=x onerror=alert(1)>",
    "&#64;boss &lt;!-- $x^2$ \\ trailing backslash \\",
])
def test_md_text_forms_no_markup_and_reads_back_as_written(raw):
    escaped = md_text(raw)
    assert "\n" not in escaped
    assert not re.search(r"(?<!\\)[<`*_|~\[\]&$]", escaped.replace("\\\\", ""))
    assert md_unescape(escaped).replace(ZWSP, "") == raw


def test_mentions_and_references_notify_nobody():
    text = md_text("ping @boss and @acme/team about #12 and GH-7, mail me@x.org")
    assert "@boss" not in text and f"@{ZWSP}boss" in text
    assert f"#{ZWSP}12" in text and f"GH-{ZWSP}7" in text and "@acme" not in text
    assert md_text("section #intro stays") == "section #intro stays"


def test_bare_addresses_do_not_become_links():
    text = md_text("see https://github.com/o/r/issues/1, HTTP://x.org and www.y.org")
    assert "https://" not in text and "HTTP://" not in text and "www." not in text
    assert md_unescape(text).replace(ZWSP, "") == \
        "see https://github.com/o/r/issues/1, HTTP://x.org and www.y.org"


def test_addresses_glued_to_a_digit_or_underscore_do_not_become_links_either():
    # GitHub's autolinker links these: no word boundary before the scheme or www.
    raw = "x 1https://github.com/acme/secret/issues/7 _www.evil.example a_https://e.example/"
    text = md_text(raw)
    assert "://" not in text and "www." not in text
    assert md_unescape(text).replace(ZWSP, "") == raw


@pytest.mark.parametrize("raw", ["# Pwned heading", "> quoted", "- item", "+ item",
                                 "===", "1. ordered", "12) ordered"])
def test_text_that_would_start_a_block_is_escaped_at_its_start(raw):
    """Wherever the text is put (a report's "- customer: n" line, a line of its own), its
    first character cannot make a heading, a quote, a list or a setext underline."""
    text = md_text(raw)
    assert re.match(r"\\[#>+=-]|\d+\\[.)]", text), text
    assert md_unescape(text) == raw
    assert md_text("a # b > c 1. d") == "a # b > c 1. d"  # inside a line: as it was
    assert md_text("=SUM(1)") == "=SUM(1)" and md_text("-x") == "-x"  # no block either


def test_jira_links_of_other_schemes_and_emoticons_stay_text():
    """Jira's wiki links file:, ftps, news, nntp, irc and mailto: too, and draws (/) or :)
    as icons: none of them from what a requester wrote."""
    from scopeguard.integrations.jira.format import to_wiki

    raw = ("see file://host/x.exe ftps://e.example/p news://e.example/A nntp://n/x "
           "irc://i/c mailto:boss (/) approved :) (x) (on)")
    wiki = to_wiki("- " + md_text(raw))
    for live in ("file:", "ftps://", "news:", "nntp://", "irc://", "mailto:", "(/)", ":)", "(x)",
                 "(on)"):
        assert live not in wiki, (live, wiki)
    assert md_unescape(md_text(raw)).replace(ZWSP, "") == raw
    assert "C:" in md_text("C:\\temp") and "(71%)" in to_wiki("core (71%)")


def test_jira_wiki_shows_a_backslash_and_cannot_be_given_a_link():
    from scopeguard.integrations.jira.format import BACKSLASH, to_wiki

    wiki = to_wiki("- " + md_link("PAW-1", "https://x.example/a][~admin]") + " "
                   + md_text("C:\\temp\\new"))
    assert f"C:{BACKSLASH}temp{BACKSLASH}new" in wiki and "\\\\" not in wiki
    assert "[PAW-1|https://x.example/a%5D%5B~admin%5D]" in wiki and "[~admin]" not in wiki


def test_text_is_one_line_and_clipped_before_escaping():
    assert md_text("a\nb\r\n  c") == "a b c"
    clipped = md_text("*" * 50, limit=10)
    assert clipped == "\\*" * 9 + "…"  # never half an escape


@pytest.mark.parametrize("url, href", [
    ("https://t.example/a b)c", "https://t.example/a%20b%29c"),
    ("http://t.example/x?y=1&z=<2>", "http://t.example/x?y=1&z=%3C2%3E"),
    ("javascript:alert(1)", ""), ("data:text/html,x", ""), ("//t.example", ""),
    ("ftp://t.example", ""), ("", ""), ("https://", ""),
])
def test_only_http_urls_become_links(url, href):
    assert safe_url(url) == href
    link = md_link("#12 @x", url)
    if href:
        assert link == f"[#{ZWSP}12 @{ZWSP}x]({href})"
    else:
        assert "](" not in link and link == md_text("#12 @x")


def test_code_spans_and_fences_cannot_be_closed_from_inside():
    assert md_code("scope: `core`\n") == "`scope: 'core'`"
    fenced = md_fence('{"title": "``` closes? ````"}', "json")
    fence = fenced.split("\n")[0]
    assert fence == "`````json" and fenced.endswith("\n`````")


@pytest.mark.parametrize("value, cell", [
    ("=1+1", "'=1+1"), ("+SUM(A1)", "'+SUM(A1)"), ("-2", "'-2"), ("@cmd", "'@cmd"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("  =1", "'  =1"), ("safe", "safe"), ("", ""),
    (0.5, 0.5), ("t\x1b]0;owned\x07 \u202eevil\u202c\nnext", "t]0;owned evil\nnext"),
])
def test_csv_cells_are_neutralised(value, cell):
    assert csv_cell(value) == cell


def test_plain_drops_terminal_escapes_and_bidi_overrides():
    assert plain("title\x1b[2J\x07 \u202eevil\u202c\nnext") == "title[2J evil next"
    assert plain("a\u200fb\u200ec\u061cd\u2067e") == "abcde"  # marks and isolates too


def test_plain_drops_zero_width_characters_markdown_keeps_them():
    """A terminal shows no zero-width space: 'Ac\u200bme' looked like 'Acme' and its
    column was one wider than it looked. The joiner and non-joiner stay (they shape
    Persian, Arabic and Indic words, and hold emoji together). Markdown keeps what was
    written, only its mentions escaped."""
    raw = "Ac\u200bme \ufeffCorp\u2060 \u180e\U0001f468\u200d\U0001f469 \u0645\u06cc\u200c"
    assert plain(raw) == "Acme Corp \U0001f468\u200d\U0001f469 \u0645\u06cc\u200c"
    assert plain(raw, 4) == "Acm…"  # cut after the invisible ones are gone
    assert md_unescape(md_text(raw)) == raw and md_code(raw) == f"`{raw}`"
    assert no_controls("a\x1b\x9b\u202eb\tc\nd") == "ab\tc\nd"  # breaks kept (HTML)


def test_json_keeps_the_data_and_escapes_what_a_terminal_acts_on():
    import json

    value = {"customer": "Acme\u202e evil\x9b[2J\u2028 \u200f ok é"}
    dumped = json_safe(json.dumps(value, ensure_ascii=False))
    assert not re.search("[\x7f-\x9f\u200e\u200f\u2028\u202a-\u202e]", dumped)
    assert "é" in dumped and json.loads(dumped) == value


# --- markers: scopeguard's own lines only ---------------------------------------------------

HEAD = f"{render.COMMENT_MARKER}\n<!-- scopeguard:label=core confidence=0.712 -->"


def test_markers_are_read_from_the_header_lines():
    markers = render.read_markers(HEAD + "\n<!-- scopeguard:human-label=one_off by=carol -->\n"
                                  "### scopeguard\n<!-- scopeguard:label=generalizable "
                                  "confidence=1 -->")
    assert markers == render.Markers(True, "core", 0.712, "one_off", "carol")


@pytest.mark.parametrize("body", [
    "Thanks!\n" + HEAD,  # not at the top
    "Quoting it: " + HEAD.replace("\n", " "),
    "<!-- scopeguard:label=core confidence=0.9 -->\nno verdict marker first",
    "text\n\n{color:#97a0af}<!-- scopeguard:verdict --> <!-- scopeguard:label=core "
    "confidence=0.9 --> and more words{color}",  # a footer must be markers only
])
def test_markers_elsewhere_are_ignored(body):
    assert render.read_markers(body) == render.Markers()
    assert render.marked_label(body) is None


def test_markers_in_jiras_footer_are_read():
    wiki = "h3. verdict\n\n{color:#97a0af}" + HEAD.replace("\n", " ") + "{color}"
    assert render.read_markers(wiki).label == "core"
    assert render.read_markers("verdict\n" + HEAD.replace("\n", " ") + "\n").label == "core"
