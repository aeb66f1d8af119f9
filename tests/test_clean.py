import pytest

from scopeguard.clean import clean_text, prepare

TEMPLATE_BODY = """<!-- Please search existing issues first -->
### Is your feature request related to a problem? Please describe.
Reminders go out too early for morning slots.

### Describe the solution you'd like
Send them at 7pm the evening before.

**What version of Pawtrack are you using?**
2.3

- [x] I searched the existing issues

```
Traceback (most recent call last):
  File "x.py", line 1
```

> On Monday support wrote:
> have you tried the settings page?

![screenshot](https://example.com/a.png) See [the docs](https://example.com/docs) or https://example.com/x
"""


def test_template_noise_is_removed_and_request_kept():
    text = clean_text(TEMPLATE_BODY)
    assert "Reminders go out too early for morning slots." in text
    assert "Send them at 7pm the evening before." in text
    for noise in ("Please search", "Describe the solution", "related to a problem", "Traceback",
                  "have you tried", "screenshot", "https://", "I searched", "What version"):
        assert noise not in text, noise
    assert "the docs" in text  # link text kept, URL dropped


def test_non_template_heading_kept_as_sentence():
    assert clean_text("## Waitlist by SMS\nplease") == "Waitlist by SMS.\nplease"


def test_unclosed_comment_and_fence_do_not_swallow_title():
    doc = prepare("Add dark mode", "text <!-- never closed")
    assert doc.chunks == ("Add dark mode. text",)
    doc = prepare("Add dark mode", "```\nunclosed code")
    assert doc.chunks == ("Add dark mode",)


def test_empty_inputs():
    assert clean_text("") == ""
    doc = prepare("", "")
    assert doc.words == 0 and doc.chunks == ("",)


def test_short_request_is_one_chunk_with_title_first():
    doc = prepare("Title here", "Body words")
    assert doc.chunks == ("Title here. Body words",) and not doc.truncated


def test_long_body_is_chunked_with_overlap_not_cut():
    body = " ".join(f"w{i}" for i in range(1000))
    doc = prepare("T", body, chunk_words=100, overlap=20, max_chunks=50)
    assert len(doc.chunks) == 13  # ceil((1001 - 100) / 80) + 1
    assert all(len(c.split()) <= 100 for c in doc.chunks)
    assert doc.chunks[0].split()[80:] == doc.chunks[1].split()[:20]  # overlap
    assert doc.chunks[-1].split()[-1] == "w999"  # nothing dropped
    assert not doc.truncated


def test_huge_body_is_capped_and_flagged():
    body = "word " * 100_000
    doc = prepare("T", body, chunk_words=100, overlap=0, max_chunks=5)
    assert len(doc.chunks) == 5 and doc.truncated and doc.words == 100_001


@pytest.mark.parametrize("unit", ["\n", " \n", "\t\n", "- \n", "#\n", "Customer:\n", "h1.\n",
                                  "**a**\n\n", "> \n", "\f", "\u2028", "\x85", "\u00a0",
                                  "# a" + " " * 65_000 + "b", "**a**" + " " * 65_000 + "x",
                                  "Customer: a" + " " * 65_000 + "b", "\r\n",
                                  "### Customer\n" + " " * 65_000 + "#"])
def test_a_body_of_blank_lines_is_cleaned_in_linear_time(unit):
    """GitHub takes 65,536 characters of body: blank lines by the thousand made the line
    patterns (\\s spanning line breaks) scan to the end from every line, minutes per
    request, in every run whose backlog held that issue. Far under a second now; the
    bound leaves room for a slow machine, not for the quadratic (25 s to 10 minutes). In a
    process of its own: a regular expression holds the interpreter until it is done."""
    within_10_s("import sys; from scopeguard.backlog import body_field; "
                "from scopeguard.clean import clean_text, prepare; "
                f"u = {unit!r}; b = (u * (65536 // len(u) + 1))[:65536]; clean_text(b); "
                "body_field(b, 'Customer'); prepare('x', b)",
                f"cleaning 65,536 characters of {unit[:20]!r}...")


def within_10_s(code: str, what: str) -> None:
    """Run ``code`` in a Python process of its own; fail if it takes over 10 s."""
    import subprocess
    import sys

    try:
        subprocess.run([sys.executable, "-c", code], check=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took over 10 s")


@pytest.mark.parametrize("unit", ["[", "![", "[[", "[x|", "[~", "[http://", "[a](", "<a",
                                  "<details", "`", "```", "~~~", "{code:", "{color:",
                                  "Acme ", "SAP Cloud "])
def test_markup_that_opens_and_never_closes_is_cleaned_in_linear_time(unit):
    """Anyone who can open an issue writes its body: '[' 100,000 times made the link
    patterns scan to the end from every '[' (77 s for 100 KB, hours for the 1 MB a
    backlog file may hold), as did unclosed tags, wiki links and macros, a line of
    backticks, and a run of capitalised words for the custom-work signal ('Acme Acme
    ... Inc'). 200,000 characters take about half a second each now; with the old
    patterns 14 of these 16 took over 10 s, the worst many minutes. In a process of its
    own, as above."""
    within_10_s("from scopeguard.clean import prepare; "
                "from scopeguard.signals import custom_signals, input_class; "
                f"u = {unit!r}; b = (u * (200_000 // len(u) + 1))[:200_000]; "
                "d = prepare('x', b); custom_signals(b); custom_signals(d.text); input_class(b)",
                f"cleaning 200,000 characters of {unit!r}...")


@pytest.mark.parametrize(("raw", "cleaned"), [
    ("{code:title=a{b}}x{code} after", "after"),
    ("[Link text|http://x?a=[1]] z", "Link text] z"),
    ('<div title="a<b">hello', "hello"),
    ("[link](https://x/a((b))) after", "link) after"),
    ("see [docs](https://x.org/a_(b)) now", "see docs now"),
])
def test_markup_is_cleaned_as_before_the_linear_patterns(raw, cleaned):
    """What the patterns took before they were made linear, they take still (a second
    reader found the first linear versions leaving these half cleaned)."""
    assert clean_text(raw) == cleaned
