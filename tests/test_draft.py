"""`scopeguard init --from-docs` (issue 14): a positioning file drafted from the docs, every
entry with its FILE:LINE, every field the docs do not support left empty with what to
write; and `check`'s warnings for empty fields and policy-like non-goals."""

from __future__ import annotations

import pytest

from scopeguard.cli import cli
from scopeguard.draft import Doc, draft, render
from scopeguard.lint import lint
from scopeguard.positioning import load_positioning, parse_positioning, read_yaml

README = """\
<p align="center"><img src="logo.png"></p>

# Tasklet: a tiny to-do server

[![CI](https://ci.example/badge.svg)](https://ci.example)

Tasklet is a self-hosted to-do list server for small households. It keeps one shared
list per home and syncs it to every phone in seconds.
It is a lightweight alternative to Todoist for families.

## Features

- **Shared lists**: one list per household, edited by everyone.
- **Reminders** - a push notification when a task is due.
- Offline mode with conflict-free sync
- Recurring tasks

## Installation

```sh
docker run tasklet  # this does not install anything else
```

## FAQ

Tasklet does not support teams or companies; use a project tool such as Kanboard instead.
Calendar sync is out of scope.
You do not need an account to try it.
We will not add a built-in chat \U0001f44b.
"""

RST = """\
Tasklet
=======

Tasklet is a to-do server.

Highlights
----------

Shared lists
~~~~~~~~~~~~

Everyone in the household edits the same list.

Reminders
~~~~~~~~~

A push notification when a task is due.

Limits
------

Tasklet deliberately keeps no history of deleted tasks.

.. code-block:: sh

   tasklet does not run on Windows
"""


def test_a_markdown_readme_gives_product_category_features_and_non_goals():
    d = draft([Doc("README.md", README)])
    assert (d.product, d.product_source) == ("Tasklet", "README.md:3")
    assert d.category == "For a self-hosted to-do list server for small households, use Tasklet"
    assert d.category_source == "README.md:7"
    assert [s.source for s in d.statements] == ["README.md:7", "README.md:9"]
    assert [(f.name, f.description, f.source) for f in d.features] == [
        ("Shared lists", "one list per household, edited by everyone", "README.md:13"),
        ("Reminders", "a push notification when a task is due", "README.md:14"),
        ("Offline mode with conflict-free sync", "", "README.md:15"),
        ("Recurring tasks", "", "README.md:16")]
    goals = {n.name: n for n in d.non_goals}
    assert set(goals) == {"Teams or companies", "Calendar sync", "A built-in chat \U0001f44b"}
    assert goals["Teams or companies"].instead == "a project tool such as Kanboard"
    assert goals["Teams or companies"].source == "README.md:26"
    assert goals["Calendar sync"].source == "README.md:27"
    # Neither the code block's "does not" nor an instruction to the reader is a limit.
    assert not any("install" in n.description or "account" in n.description
                   for n in d.non_goals)
    assert d.alternative and d.alternative.name == "Todoist for families"


def test_the_draft_is_a_valid_file_with_sources_and_todos(tmp_path):
    text = render(draft([Doc("README.md", README)]), ["README.md"])
    assert "# from README.md:13\n  - name: \"Shared lists\"" in text
    for key in ("target_customer", "need", "main_value", "uniqueness"):
        assert f"# TODO {key}: " in text and f'{key}: ""' in text
    assert "\\ud83d" not in text and "\U0001f44b" in text  # characters, not JSON escapes
    path = tmp_path / "scopeguard.yml"
    path.write_text(text)
    p = load_positioning(path)
    assert p.product == "Tasklet" and len(p.features) == 4 and len(p.non_goals) == 3
    assert p.non_goals[0].instead == "a project tool such as Kanboard"
    assert (p.target_customer, p.need, p.main_value, p.uniqueness) == ("", "", "", "")
    # check says what each empty field buys, and what to write.
    findings = {(f.level, f.key): f for f in lint(p)}
    for key in ("target_customer", "need", "main_value"):
        assert ("warning", key) in findings and "is empty" in findings["warning", key].message
    assert ("error", "uniqueness") in findings


def test_restructuredtext_headings_sections_and_code_blocks():
    d = draft([Doc("docs/index.rst", RST)])
    assert d.product == "Tasklet" and d.category == "For a to-do server, use Tasklet"
    assert [(f.name, f.source) for f in d.features] == [("Shared lists", "docs/index.rst:9"),
                                                        ("Reminders", "docs/index.rst:14")]
    assert d.features[0].description == "Everyone in the household edits the same list."
    [limit] = d.non_goals
    assert limit.source == "docs/index.rst:22" and "history" in limit.name.lower()
    assert all("Windows" not in n.description for n in d.non_goals)  # inside a code block


def test_several_docs_add_features_and_limits_once():
    more = "## Features\n\n- Recurring tasks\n- Shared lists: again\n- Tags\n\n" \
           "Tasklet will not sync with calendars.\n"
    d = draft([Doc("README.md", README), Doc("docs/more.md", more)])
    names = [f.name for f in d.features]
    assert names.count("Shared lists") == 1 and names[-1] == "Tags"
    assert d.features[-1].source == "docs/more.md:5"
    assert any(n.source == "docs/more.md:7" for n in d.non_goals)


def test_no_features_section_falls_back_to_topic_headings():
    text = "# Mini\n\nMini is a tool.\n\n## Fast search\n\ntext\n\n## Installation\n\nx\n"
    d = draft([Doc("README.md", text)])
    assert [f.name for f in d.features] == ["Fast search"]  # not "Installation"


def test_init_from_docs_writes_a_draft_and_refuses_to_overwrite(runner, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = tmp_path / "scopeguard.yml"
    result = runner.invoke(cli, ["init", str(out), "--from-docs", str(readme)])
    assert result.exit_code == 0, result.output
    assert "4 features, 3 non-goals" in result.output
    assert load_positioning(out).product == "Tasklet"
    again = runner.invoke(cli, ["init", str(out), "--from-docs", str(readme)])
    assert again.exit_code != 0 and "--force" in again.output
    named = runner.invoke(cli, ["init", str(out), "--force", "--from-docs", str(readme),
                                "--product", "Tasklet Cloud"])
    assert named.exit_code == 0 and load_positioning(out).product == "Tasklet Cloud"
    checked = runner.invoke(cli, ["check", str(out), "--fast"])
    assert checked.exit_code == 1  # uniqueness is missing: an error that says what to write
    assert "target_customer: is empty" in checked.output
    missing = runner.invoke(cli, ["init", str(out), "--force", "--from-docs",
                                  str(tmp_path / "nope.md")])
    assert missing.exit_code == 2 and "nope.md" in missing.output


@pytest.mark.parametrize("name, policy", [
    ("Major new features", True), ("Not every new feature belongs in core", True),
    ("Out-of-scope functionality", True), ("Every feature in core", True),
    ("Content search", False), ("Full context for imported history", False),
])
def test_check_flags_non_goals_that_refuse_features_in_general(name, policy):
    base = {"product": "P", "category": "For x, use P", "target_customer": "a b c d",
            "need": "n", "main_value": "v", "alternative": "a", "uniqueness": "u",
            "features": [{"name": f"F{k}", "description": f"does thing {k}"} for k in range(4)]}
    description = ("not all features are available with imported data"
                   if name.startswith("Full") else "see the contributing guide")
    p = parse_positioning({**base, "non_goals": [{"name": name, "description": description}]})
    flagged = [f for f in lint(p) if f.key == "non_goals[0]" and "in general" in f.message]
    assert bool(flagged) is policy


def test_a_drafted_file_round_trips_hostile_text():
    hostile = "# X\n\nX is a tool.\n\n## Features\n\n- Quotes \" and \\\\ back: colon: # hash\n"
    text = render(draft([Doc("R.md", hostile)]), ["R.md"])
    data = read_yaml(text, "draft")
    assert data["features"][0]["name"] == "Quotes \" and \\\\ back"


def test_init_from_empty_docs_is_refused_and_a_draft_without_features_warns(runner, tmp_path):
    empty, blank = tmp_path / "empty.md", tmp_path / "blank.md"
    empty.write_bytes(b"")
    blank.write_text("\n  \n\t\n")
    out = tmp_path / "scopeguard.yml"
    result = runner.invoke(cli, ["init", str(out), "--from-docs", str(empty), "--from-docs",
                                 str(blank)])
    assert result.exit_code == 2
    assert "empty.md" in result.output and "without --from-docs" in result.output
    assert not out.exists()  # nothing written from nothing
    headings = tmp_path / "headings.md"
    headings.write_text("# Tasklet\n\nTasklet is a small task list for teams.\n")
    drafted = runner.invoke(cli, ["init", str(out), "--from-docs", str(headings)])
    assert drafted.exit_code == 0 and out.exists()
    assert "0 features" in drafted.output
    assert "warning: found no features in" in drafted.stderr


def test_an_undecodable_doc_names_the_file_without_a_spreadsheet_hint(runner, tmp_path):
    doc = tmp_path / "README.md"
    doc.write_bytes(b"# Tasklet\n\x81\x82 broken\n")
    result = runner.invoke(cli, ["init", str(tmp_path / "s.yml"), "--from-docs", str(doc)])
    assert result.exit_code == 2
    assert "README.md line 2" in result.output and "UTF-8" in result.output
    assert "Excel" not in result.output


def test_init_from_docs_takes_a_shells_list_of_docs_and_never_writes_over_one(runner, tmp_path,
                                                                              monkeypatch):
    """The documented `init --from-docs README.md docs/*.md`: the shell hands init the docs
    after the first as arguments. They were taken as the file to write (refused, and with
    the --force the refusal suggested, a user's doc was replaced by the draft)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "docs").mkdir()
    first, second = tmp_path / "docs" / "a.md", tmp_path / "docs" / "b.md"
    first.write_text("# Guide\n\nHow to use it.\n")
    second.write_text("# More\n\n## Features\n\n- Calendar sync: tasks in your calendar\n")
    result = runner.invoke(cli, ["init", "--force", "--from-docs", "README.md", "docs/a.md",
                                 "docs/b.md"])
    assert result.exit_code == 0, result.output
    assert "from README.md, docs/a.md, docs/b.md" in result.output
    assert first.read_text() == "# Guide\n\nHow to use it.\n"  # untouched
    drafted = (tmp_path / "scopeguard.yml").read_text()
    assert "Calendar sync" in drafted and "# from docs/b.md:" in drafted
    named = runner.invoke(cli, ["init", "--force", "p.yaml", "--from-docs", "README.md",
                                "docs/a.md"])
    assert named.exit_code == 0 and (tmp_path / "p.yaml").is_file()
    for args in (["docs/a.md"], ["--force", "docs/a.md"], ["a.yml", "b.yml"]):
        refused = runner.invoke(cli, ["init", *args])
        assert refused.exit_code == 2 and "Fix:" in refused.output, args
    assert first.read_text() == "# Guide\n\nHow to use it.\n"


def test_the_draft_keeps_a_category_sentence_as_written_and_names_with_dots():
    """A README that already says 'For X, use Y' had its first sentence turned into the
    category instead; 'an alternative to Cronitor and Healthchecks.io' lost '.io'; a
    product named 'Quillio Notes' whose README says 'Quillio is...' got 'For Quillio is'."""
    text = ("# Tidepool\n\nTidepool is a self-hosted uptime and cron-job monitor for small "
            "ops teams. For teams that need to know when a scheduled job silently stops, use "
            "Tidepool. It is an alternative to Cronitor and Healthchecks.io for people who "
            "self-host.\n\n## Features\n\n- Checks: ping URLs\n")
    d = draft([Doc("README.md", text)])
    assert d.category == ("For teams that need to know when a scheduled job silently stops, "
                          "use Tidepool")
    assert any("self-hosted uptime" in s.name for s in d.statements)
    assert d.alternative.name == "Cronitor and Healthchecks.io for people who self-host"
    named = draft([Doc("README.md", "# Quillio\n\nQuillio is a lightweight note-taking app "
                                    "for researchers.\n")], "Quillio Notes")
    assert named.category == "For a lightweight note-taking app for researchers, use Quillio Notes"


def test_a_for_use_sentence_about_something_else_is_not_the_category():
    d = draft([Doc("README.md", "# Tasklet\n\nTasklet is a small task list for teams. For "
                                "questions, use GitHub Discussions.\n")])
    assert d.category == "For a small task list for teams, use Tasklet"
