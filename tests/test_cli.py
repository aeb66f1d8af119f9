import gc
import json

import pytest

from scopeguard.backlog import read_backlog
from scopeguard.cli import cli

FAST = ["--model", "hashing"]


def test_check_example_is_clean(runner, example_config):
    result = runner.invoke(cli, ["check", str(example_config), "--fast"])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output


def test_check_errors_exit_1_and_warnings_print(runner, tmp_path):
    path = tmp_path / "scopeguard.yml"
    path.write_text("product: X\ncategory: A tool\ntarget_customer: everyone\n"
                    "need: things\nmain_value: improve efficiency\nfeatures: [a, b, c]\n")
    result = runner.invoke(cli, ["check", str(path), "--fast"])
    assert result.exit_code == 1
    assert "error: alternative: is missing" in result.stderr
    assert "warning: target_customer: vague target customer 'everyone'" in result.stdout
    assert "warning: main_value: vague wording 'improve efficiency'" in result.stdout


def test_check_refuses_thresholds_and_a_head_the_other_commands_refuse(
        runner, tmp_path, example_config):
    """check said '0 error(s)' for thresholds classify and audit stop on, and for a head
    fitted for another model, which classify used without a word."""
    import shutil
    from importlib import resources

    from scopeguard.calibration import DEFAULT_CALIBRATION

    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() +
                      "thresholds: {core_fit: 0.1, generalizable_fit: 0.9}\n")
    result = runner.invoke(cli, ["check", str(config), "--fast"])
    assert result.exit_code == 1, result.output
    assert "error: thresholds: generalizable_fit (0.9) is above core_fit (0.1)" in result.stderr
    with resources.as_file(resources.files("scopeguard.models") / DEFAULT_CALIBRATION) as shipped:
        shutil.copy(shipped, tmp_path / "head.json")  # fitted for all-MiniLM-L6-v2
    config.write_text(example_config.read_text() + "calibration: head.json\n")
    common = ["--db", str(tmp_path / "c.db"), *FAST]
    result = runner.invoke(cli, ["check", str(config), *common])
    assert result.exit_code == 1 and "error: calibration:" in result.stderr, result.output
    assert "was fitted for the model sentence-transformers/all-MiniLM-L6-v2" in result.stderr
    result = runner.invoke(cli, ["classify", "-c", str(config), *common, "-t", "Export CSV"])
    assert result.exit_code == 2 and "this run embeds with hashing" in result.stderr
    assert "Fix: fit a head for this model" in result.stderr
    assert runner.invoke(cli, ["check", str(config), "--fast"]).exit_code == 0  # no model


def test_check_repeats_the_files_words_without_terminal_escapes(runner, tmp_path,
                                                                 example_config):
    """A feature named with an OSC 8 hyperlink (twice: the duplicate-name error quotes it)
    and a product name with a colour reached the terminal as they were."""
    import yaml

    data = yaml.safe_load(example_config.read_text())
    name = "R \x1b]8;;http://evil.example\x1b\\x\x1b]8;;\x1b\\"
    data["features"] += [{"name": name, "description": "a"}, {"name": name, "description": "b"}]
    data["product"], data["category"] = "\x1b[31mPawtrack\u202e", "A tool"
    path = tmp_path / "scopeguard.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    result = runner.invoke(cli, ["check", str(path), "--fast"])
    assert result.exit_code == 1 and "duplicates the name 'R ]8;;http://evil.example" in \
        result.stderr, result.output
    assert not {"\x1b", "\u202e"} & set(result.output)


def test_check_malformed_file_exits_2_naming_key(runner, tmp_path):
    path = tmp_path / "scopeguard.yml"
    path.write_text("product: X\ncategory: For x, use X\ntarget_customer: t\nneed: n\n"
                    "main_value: v\nfeatures: 3\n")
    result = runner.invoke(cli, ["check", str(path), "--fast"])
    assert result.exit_code == 2
    assert f"{path}: features: expected a list" in result.stderr


def test_check_finds_file_in_directory(runner, tmp_path, example_config):
    (tmp_path / ".github").mkdir()
    (tmp_path / ".github" / "scopeguard.yml").write_text(example_config.read_text())
    result = runner.invoke(cli, ["check", str(tmp_path), "--fast"])
    assert result.exit_code == 0 and ".github/scopeguard.yml" in result.output


def test_schema_is_json(runner):
    data = json.loads(runner.invoke(cli, ["schema"]).output)
    assert "features" in data["required"]


def test_init_writes_a_template_that_loads_but_fails_check(runner, tmp_path):
    path = tmp_path / "scopeguard.yml"
    assert runner.invoke(cli, ["init", str(path)]).exit_code == 0
    assert runner.invoke(cli, ["init", str(path)]).exit_code == 2  # no overwrite: bad input
    result = runner.invoke(cli, ["check", str(path), "--fast"])
    # the template's placeholders are not a positioning: check says so until replaced
    assert result.exit_code == 1 and "is still a placeholder" in result.output


def test_classify_formats(runner, tmp_path, example_config):
    base = ["classify", "-c", str(example_config), "--db", str(tmp_path / "c.db"), *FAST,
            "-t", "Reminders by WhatsApp", "-b", "Send reminders on WhatsApp"]
    text = runner.invoke(cli, base)
    assert text.exit_code == 0, text.output
    assert "verdict: scope:" in text.output and "features:" in text.output
    data = json.loads(runner.invoke(cli, [*base, "--format", "json"]).output)
    assert data["label"] in ("core", "generalizable", "one_off") and data["features"]
    md = runner.invoke(cli, [*base, "--format", "markdown"]).output
    assert md.startswith("<!-- scopeguard:verdict -->") and "| feature |" in md


def test_classify_from_stdin_and_json_file(runner, tmp_path, example_config):
    base = ["classify", "-c", str(example_config), "--db", str(tmp_path / "c.db"), *FAST,
            "--format", "json"]
    out = runner.invoke(cli, [*base, "--file", "-"], input="Waitlist by email\nAlso email.\n")
    assert json.loads(out.output)["title"] == "Waitlist by email"
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"id": "X-1", "title": "Waitlist by email", "body": "b"}))
    assert json.loads(runner.invoke(cli, [*base, "-f", str(path)]).output)["request_id"] == "X-1"


def test_classify_backlog_item_counts_demand(runner, tmp_path, example_config, example_backlog):
    from scopeguard.backlog import read_backlog

    first = read_backlog(example_backlog)[0]
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "--backlog",
                                 str(example_backlog), "--id", first.id, "--format", "json"])
    data = json.loads(result.output)
    assert data["request_id"] == first.id and data["customer"] == first.customer


def test_classify_bad_input_errors(runner, tmp_path, example_config):
    base = ["classify", "-c", str(example_config), "--db", str(tmp_path / "c.db"), *FAST]
    result = runner.invoke(cli, base)
    assert result.exit_code == 2 and "no request given" in result.stderr
    (tmp_path / "empty.txt").write_text("\n  \n")
    result = runner.invoke(cli, [*base, "-f", str(tmp_path / "empty.txt")])
    assert result.exit_code == 2 and "empty.txt is empty" in result.stderr
    result = runner.invoke(cli, [*base, "-f", "-"], input="")
    assert result.exit_code == 2 and "standard input is empty" in result.stderr
    result = runner.invoke(cli, [*base, "-f", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2 and "file not found" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(cli, [*base, "-f", str(bad)])
    assert result.exit_code == 2 and "not valid" in result.stderr
    result = runner.invoke(cli, [*base, "-t", "x" * 2000])
    assert result.exit_code == 2 and "title is 2,000 characters" in result.stderr
    result = runner.invoke(cli, ["classify", "-c", str(tmp_path / "nope.yml"), *FAST, "-t", "x"])
    assert result.exit_code == 2 and "nope.yml: file not found" in result.stderr
    bad.write_text('{"title": ' + "1" * 5000 + "}")  # past Python's 4,300 digits
    result = runner.invoke(cli, [*base, "-f", str(bad)])
    assert result.exit_code == 2 and "not valid" in result.stderr, result.output
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\xe9 reminders".encode("latin-1"))
    for args in (["-f", str(latin)], ["-t", "x", "--backlog", str(latin.with_suffix(".csv"))]):
        latin.with_suffix(".csv").write_bytes(b"id,title\n1,caf\xe9\n")
        result = runner.invoke(cli, [*base, *args])
        # classify takes no --encoding: its fix does not name one
        assert result.exit_code == 2 and "save the file as UTF-8" in result.stderr
        assert "--encoding" not in result.stderr, result.stderr
    result = runner.invoke(cli, [*base, "-f", "-"], input="Caf\xe9 reminders".encode("latin-1"))
    assert result.exit_code == 2 and "--encoding" not in result.stderr, result.stderr


@pytest.mark.parametrize("url", ["not a url", "http://[::1", "ftp://127.0.0.1:1"])
def test_a_bad_github_api_url_is_named_not_a_traceback(runner, tmp_path, example_config, url):
    """history and audit --github build the same client as the Action: a GITHUB_API_URL it
    cannot use is refused before any call (PyGithub failed on it with a traceback)."""
    env = {"GITHUB_API_URL": url, "GITHUB_TOKEN": "ghp_" + "x" * 36}
    for args in (["history", "--github", "acme/pawtrack"],
                 ["audit", "--github", "acme/pawtrack", *FAST]):
        result = runner.invoke(cli, [*args, "-c", str(example_config), "--db",
                                     str(tmp_path / "c.db")], env=env)
        assert result.exit_code == 2, result.output
        assert "GITHUB_API_URL" in result.output and "Fix:" in result.output
        assert "x" * 36 not in result.output


def test_init_over_a_file_and_calibrate_without_labels_name_the_fix(runner, tmp_path,
                                                                     example_config):
    result = runner.invoke(cli, ["init", str(example_config)])
    assert result.exit_code == 2 and "exists. Fix: pass --force" in result.output
    result = runner.invoke(cli, ["calibrate", "-c", str(example_config), *FAST])
    assert result.exit_code == 2 and "--labels FILE" in result.output, result.output


def test_an_output_the_system_refuses_is_named(runner, tmp_path, example_config,
                                               example_backlog):
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--from-file",
                                 str(example_backlog), "--db", str(tmp_path / "c.db"), *FAST,
                                 "-o", "/proc/self/status"])
    assert result.exit_code == 2 and "(/proc/self/status)" in result.output, result.output


def test_options_that_contradict_each_other_are_refused(runner, tmp_path, example_config,
                                                        example_backlog):
    request = tmp_path / "r.json"
    request.write_text('{"title": "Reminders by WhatsApp", "body": "please"}')
    result = runner.invoke(cli, ["classify", "-c", str(example_config), *FAST, "--db",
                                 str(tmp_path / "c.db"), "-t", "other", "-f", str(request)])
    assert result.exit_code == 2 and "not --title/--body" in result.output, result.output
    result = runner.invoke(cli, ["audit", "-c", str(example_config), *FAST, "--db",
                                 str(tmp_path / "c.db"), "--from-file", str(example_backlog),
                                 "--json", "--format", "html"])
    assert result.exit_code == 2 and "--json is --format json" in result.output, result.output


def test_a_date_that_does_not_exist_and_a_directory_of_other_files_are_refused(
        runner, tmp_path, example_config):
    result = runner.invoke(cli, ["backtest", "-c", str(example_config), *FAST, "--db",
                                 str(tmp_path / "c.db"), "--since", "2024-99-99"])
    assert result.exit_code == 2 and "not a date" in result.output, result.output
    mine = tmp_path / "myapp"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "app settings"}')
    result = runner.invoke(cli, ["model", "compact", "--out", str(mine)])
    assert result.exit_code == 2 and "--force" in result.output, result.output
    assert (mine / "config.json").read_text() == '{"my": "app settings"}'


def test_calibrate_and_eval_take_a_label_seen_once(runner, tmp_path, example_config):
    """A first week's relabels: ten core, one one_off. A k-fold's training part held one
    label only (the one_off in its test part), and calibrate and eval ended in a
    traceback. Now such a fold predicts the label it saw; both finish."""
    rows = [{"id": r.id, "title": r.title, "body": r.body,
             "label": "one_off" if k == 3 else "core"}
            for k, r in enumerate(read_backlog("examples/backlog.jsonl")[:11])]
    labels = tmp_path / "eleven.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "head.json"
    result = runner.invoke(cli, ["calibrate", "--labels", str(labels), "-c", str(example_config),
                                 "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "{'core': 10, 'one_off': 1}" in result.output and out.is_file()
    result = runner.invoke(cli, ["eval", "--requests", str(labels), "-c", str(example_config),
                                 *FAST])
    assert result.exit_code == 0, result.output
    assert "confusion" in result.output
    assert "bootstrap over requests (one product)" in result.output  # not "over products"


def test_check_takes_the_config_option_the_other_commands_take(runner, example_config,
                                                               tmp_path, monkeypatch):
    monkeypatch.delenv("SCOPEGUARD_CONFIG", raising=False)
    result = runner.invoke(cli, ["check", "-c", str(example_config), "--fast"])
    assert result.exit_code == 0, result.output
    assert str(example_config) in result.output
    other = tmp_path / "other.yml"
    other.write_text(example_config.read_text())
    both = runner.invoke(cli, ["check", str(other), "-c", str(example_config), "--fast"])
    assert both.exit_code == 2 and "name one" in both.output


def test_classify_file_refuses_json_that_is_not_one_request(runner, tmp_path, example_config):
    """A JSON list was classified as its own raw text, a misspelt key left the title empty,
    both with exit 0 and a confident-looking verdict."""
    base = ["classify", "-c", str(example_config), "--db", str(tmp_path / "c.db"), *FAST]
    many = tmp_path / "many.json"
    many.write_text('[{"title": "Export to CSV", "body": "x"}]')
    result = runner.invoke(cli, [*base, "-f", str(many)])
    assert result.exit_code == 2 and "not one request" in result.output
    assert "audit --from-file" in result.output
    typo = tmp_path / "typo.json"
    typo.write_text('{"titel": "Export to CSV", "body": "Our accountant needs it"}')
    result = runner.invoke(cli, [*base, "-f", str(typo)])
    assert result.exit_code == 2 and "did you mean 'title'" in result.output
    bracket = tmp_path / "ask.md"  # plain text whose title starts with a bracket
    bracket.write_text("[Feature] Export to CSV\nOur accountant needs it\n")
    result = runner.invoke(cli, [*base, "-f", str(bracket)])
    assert result.exit_code == 0 and "[Feature] Export to CSV" in result.output
    bracket.write_text("{Feature} Export to CSV\nOur accountant needs it\n")  # braces too
    result = runner.invoke(cli, [*base, "-f", str(bracket)])
    assert result.exit_code == 0 and "{Feature} Export to CSV" in result.output, result.output
    for broken in ('{"title": "Export to CSV", "body": "x"', "{'title': 'Export'}", "{ }x"):
        bracket.write_text(broken)  # JSON cut short, or Python's quotes: not taken as text
        result = runner.invoke(cli, [*base, "-f", str(bracket)])
        assert result.exit_code == 2 and "looks like JSON but is not valid" in result.output
    result = runner.invoke(cli, [*base, "--id", "PAW-101"])
    assert result.exit_code == 2 and "no backlog to look it up in" in result.output


def test_a_missing_github_token_is_said_for_the_command_line(runner, tmp_path, example_config,
                                                             monkeypatch):
    """The command line's fix named the Action's token input, which a CLI user has not."""
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "--github", "acme/app"])
    assert result.exit_code == 2 and "Fix: set GITHUB_TOKEN" in result.output, result.output


def test_check_path_wins_over_the_environment_but_not_over_a_typed_option(
        runner, example_config, tmp_path, monkeypatch):
    other = tmp_path / "other.yml"
    other.write_text(example_config.read_text())
    monkeypatch.setenv("SCOPEGUARD_CONFIG", str(example_config))
    env_only = runner.invoke(cli, ["check", str(other), "--fast"])
    assert env_only.exit_code == 0 and str(other) in env_only.output
    typed = runner.invoke(cli, ["check", str(other), "-c", str(example_config), "--fast"])
    assert typed.exit_code == 2 and "name one" in typed.output


# --- bad input loses nothing: the CLI audit's findings ----------------------------------------


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(runner, tmp_path,
                                                                   example_config,
                                                                   example_backlog):
    import shutil

    backlog, db = tmp_path / "backlog.jsonl", tmp_path / "c.db"
    shutil.copy(example_backlog, backlog)
    common = ["--db", str(db), "--model", "hashing"]
    ok = runner.invoke(cli, ["audit", "-c", str(example_config), "--from-file", str(backlog),
                             "-q", "-o", str(tmp_path / "report.txt"), *common])
    assert ok.exit_code == 0, ok.output
    # The audit's SQLite connections (in this process) close when collected, and the last
    # close moves the WAL into c.db: done now, so only a write by the refused runs would
    # change its bytes (a collection between the runs failed the test on CI).
    gc.collect()
    kept = {p: p.read_bytes() for p in (backlog, db)}
    cases = [
        (["audit", "-c", str(example_config), "--from-file", str(backlog), "-q", "-o",
          str(backlog), *common], "backlog"),
        (["audit", "-c", str(example_config), "--from-file", str(backlog), "-q", "-o",
          str(db), *common], "cache"),
        (["calibrate", "--labels", str(backlog), "-c", str(example_config), "--out",
          str(backlog), *common], "labels"),
        (["eval", "--requests", str(backlog), "-c", str(example_config), "--json",
          str(backlog), *common], "requests"),
    ]
    for args, name in cases:
        refused_over_input(runner, args, name)
    gc.collect()  # any connection the refused runs opened is closed, as at a process's end
    assert all(p.read_bytes() == data for p, data in kept.items())


def refused_over_input(runner, args: list[str], name: str) -> None:
    """``args`` exit 2, saying the output is the ``name`` the command reads."""
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, (args, result.output)
    assert f"is the {name} this command reads" in result.stderr, result.stderr


def copied_into(directory, source, name: str):
    """``source`` copied to ``directory/name`` (made): the copy and its bytes."""
    import shutil

    directory.mkdir()
    copy = directory / name
    shutil.copy(source, copy)
    return copy, copy.read_bytes()


def test_eval_and_calibrate_refuse_to_write_over_the_positioning_file_they_find(
        runner, tmp_path, example_config, example_backlog, monkeypatch):
    """-c naming a directory, or SCOPEGUARD_CONFIG alone, names the positioning file too:
    an output over it is refused as when -c names the file."""
    project = tmp_path / "project"
    positioning, kept = copied_into(project, example_config, "scopeguard.yml")
    common = ["--requests", str(example_backlog), "--db", str(tmp_path / "c.db"), "--model",
              "hashing"]
    cases = [["eval", *common, "-c", str(project), "--json", str(positioning)],
             ["calibrate", "--labels", str(example_backlog), "--db", str(tmp_path / "c.db"),
              "--model", "hashing", "-c", str(project), "--out", str(positioning)]]
    for args in cases:
        refused_over_input(runner, args, "positioning file")
    monkeypatch.setenv("SCOPEGUARD_CONFIG", str(project))
    result = runner.invoke(cli, ["eval", *common, "--json", str(positioning)])
    assert result.exit_code == 2 and "positioning file this command reads" in result.stderr
    monkeypatch.chdir(project)
    monkeypatch.delenv("SCOPEGUARD_CONFIG")
    result = runner.invoke(cli, ["eval", *common, "--json", "scopeguard.yml"])
    assert result.exit_code == 2 and "positioning file this command reads" in result.stderr
    assert positioning.read_bytes() == kept


def test_eval_and_calibrate_refuse_to_write_over_a_product_file_they_read(
        runner, tmp_path, example_config, example_backlog):
    """--products DIR's files are inputs too: `calibrate --out prods/pawtrack.yml`
    replaced the positioning file with the head's JSON and exited 0."""
    products = tmp_path / "prods"
    product, kept = copied_into(products, example_config, "pawtrack.yml")
    common = ["--products", str(products), "--db", str(tmp_path / "c.db"), "--model",
              "hashing"]
    for args in (["calibrate", "--labels", str(example_backlog), *common, "--out", str(product)],
                 ["eval", "--requests", str(example_backlog), *common, "--json", str(product)]):
        refused_over_input(runner, args, "product file")
    assert product.read_bytes() == kept
    # a head kept beside the product files is no input: refitting it in place is fine
    head = products / "calibration.json"
    head.write_text("{}")
    result = runner.invoke(cli, ["calibrate", "--labels", str(example_backlog), *common,
                                 "--out", str(head)])
    assert result.exit_code == 0 and "is the product file" not in result.output, result.output


def test_a_report_over_a_file_in_a_directory_that_takes_no_new_files_is_refused(
        runner, tmp_path, example_config, example_backlog, monkeypatch):
    """Written in place, a failed write would leave half a report over the good one."""
    import tempfile

    report = tmp_path / "report.json"
    report.write_text('{"old": "report"}\n')

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--from-file",
                                 str(example_backlog), "-q", "--format", "json", "-o",
                                 str(report), "--db", str(tmp_path / "c.db"), "--model",
                                 "hashing"])
    assert result.exit_code == 2 and "takes no new files" in result.stderr, result.output
    assert report.read_text() == '{"old": "report"}\n'


def test_inputs_that_gave_tracebacks_are_clear_errors(runner, tmp_path, example_config,
                                                      example_backlog):
    complex_key = tmp_path / "complex.yml"
    complex_key.write_text(example_config.read_text() + "? [a, b]\n: c\n")
    binary = tmp_path / "calibration.json"
    binary.write_bytes(b"\xff\xfe\x00binary")
    cases = [
        (["check", "--fast", str(complex_key)], "list or mapping as a key"),
        (["classify", "-c", str(example_config), "-t", "x", "--model", "hashing:abc"],
         "hashing embedder takes a size"),
        (["classify", "-c", str(example_config), "-t", "x", "--model", "hashing:0"],
         "hashing embedder takes a size"),
        (["eval", "--requests", str(example_backlog), "-c", str(example_config), "--model",
          "hashing", "--db", str(tmp_path / "c.db"), "--calibration", str(binary)],
         "not a readable calibration file"),
    ]
    for args, words in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert words in result.stderr and "Fix" in result.stderr, result.stderr


def test_a_cache_that_cannot_be_written_is_a_clear_error(runner, tmp_path, example_config,
                                                        example_backlog):
    """SQLite refusing the audit's memo (here a table replaced by a view: as a full disk or
    a read-only file would) is exit 2 naming the --db file, not a traceback."""
    import sqlite3

    db, backlog = tmp_path / "c.db", tmp_path / "b.jsonl"
    backlog.write_text(example_backlog.read_text())
    args = ["audit", "-c", str(example_config), "--from-file", str(backlog), "-q",
            "-o", str(tmp_path / "r.txt"), "--db", str(db), "--model", "hashing"]
    assert runner.invoke(cli, args).exit_code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE memo_means")
        conn.execute("CREATE VIEW memo_means AS SELECT 1 AS key")
    with backlog.open("a") as file:  # one new request: its mean is to be stored
        file.write('{"id": "NEW-1", "title": "Send invoices by fax", "body": "fax"}\n')
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"{db}: cannot be read or written" in result.stderr and "Fix" in result.stderr


def test_a_github_answer_that_is_not_githubs_json_is_a_clear_error(runner, tmp_path,
                                                                   example_config):
    """A proxy's or a login page's HTML where the API was expected."""
    from loopback import Page

    with Page(b"<html>please log in</html>") as page:
        env = {"GITHUB_TOKEN": "ghp_notjson0123456789", "SCOPEGUARD_GITHUB_RETRIES": "0",
               "GITHUB_API_URL": f"http://127.0.0.1:{page.port}"}
        for command in (["history"], ["audit", "-q", "--model", "hashing"]):
            result = runner.invoke(cli, [*command, "-c", str(example_config), "--db",
                                         str(tmp_path / "c.db"), "--github", "octo/repo"],
                                   env=env)
            assert result.exit_code == 2, (command, result.output, result.exception)
            assert "not what GitHub's API sends" in result.stderr
            assert "ghp_notjson0123456789" not in result.stderr


def test_ctrl_c_exits_130_and_keeps_the_last_report(runner, tmp_path, example_config,
                                                     example_backlog, monkeypatch):
    import scopeguard.cli as cli_module

    report = tmp_path / "report.txt"
    report.write_text("the last report\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_module, "read_backlog", interrupted)
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--from-file",
                                 str(example_backlog), "-q", "-o", str(report), "--db",
                                 str(tmp_path / "c.db"), "--model", "hashing"])
    assert result.exit_code == 130 and "interrupted" in result.stderr, result.output
    assert report.read_text() == "the last report\n"


def test_fixes_name_the_commands_own_options(runner, tmp_path, example_config,
                                              example_backlog):
    """A bad --github names --github (was: set GITHUB_REPOSITORY); calibrate's clash names
    --labels (was: --requests, which it has not)."""
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "--github", "not a repo"],
                           env={"GITHUB_TOKEN": "ghp_" + "x" * 36})
    assert result.exit_code == 2 and "--github OWNER/NAME" in result.output, result.output
    result = runner.invoke(cli, ["calibrate", "--labels", str(example_backlog), "--corpus",
                                 str(tmp_path)])
    assert result.exit_code == 2 and "give --corpus or --labels, not both" in result.output, \
        result.output


def test_options_that_would_be_ignored_or_misread_are_refused(runner, tmp_path, monkeypatch,
                                                              example_config, example_backlog):
    """-o - is standard output (it wrote a file named '-'), -o '' is refused (it printed);
    --label or --encoding where they do nothing, a --source the store does not have, and a
    calibration file that does not load are said, not ignored."""
    base = ["audit", "-c", str(example_config), "--db", str(tmp_path / "c.db"), *FAST, "-q"]
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, [*base, "--from-file", str(example_backlog), "-o", "-"])
    assert result.exit_code == 0 and result.output.startswith("id "), result.output[:200]
    assert not (tmp_path / "-").exists()
    result = runner.invoke(cli, [*base, "--from-file", str(example_backlog), "-o", ""])
    assert result.exit_code == 2 and "names no file" in result.output
    result = runner.invoke(cli, [*base, "--from-file", str(example_backlog), "--label", "x"])
    assert result.exit_code == 2 and "--label selects GitHub issues" in result.output
    result = runner.invoke(cli, [*base, "--jira", "PAW", "--encoding", "latin-1"])
    assert result.exit_code == 2 and "--encoding is for --from-file" in result.output
    result = runner.invoke(cli, ["suggest", "non-goals", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "--source", "github:typo/x",
                                 "--backlog", str(example_backlog)])
    assert result.exit_code == 2 and "--source github:typo/x: not in" in result.output
    config = tmp_path / "scopeguard.yml"
    config.write_text(example_config.read_text() + "calibration: heads/none.json\n")
    result = runner.invoke(cli, ["check", str(config), "--fast"])
    assert result.exit_code == 1 and "error: calibration:" in result.output
    assert "calibration file not found" in result.output


def test_an_error_repeating_a_requesters_id_carries_no_terminal_escapes(runner, tmp_path,
                                                                        example_config):
    """An id with an OSC title sequence, a colour and a bidi override, in a refused row:
    the error names the row without them (they went to the terminal as they were)."""
    backlog = tmp_path / "b.jsonl"
    backlog.write_text(json.dumps({"id": "\x1b]0;pwned\x07\x1b[31mRED\u202eevil",
                                   "title": "x" * 1200}) + "\n")
    result = runner.invoke(cli, ["audit", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "--from-file", str(backlog)])
    assert result.exit_code == 2 and "title is 1,200 characters" in result.output
    assert "RED" in result.output and not {"\x1b", "\x07", "\u202e"} & set(result.output)


def test_an_endless_or_huge_input_is_refused_not_read_until_memory_runs_out(
        tmp_path, example_config):
    """classify -f /dev/zero and `yes | classify -f -` read until memory ran out (a
    MemoryError traceback, or the machine swapping): at most 8 MB is read now. A backlog
    has no such cap (a million requests is a real backlog), so running out of memory on
    one is said plainly, exit 2, never a traceback. Each in a process limited to 1.5 GB:
    the imports fit, an endless read does not."""
    import resource
    import subprocess
    import sys

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    def scopeguard(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from scopeguard.cli import main; main()",
                               *args, "-c", str(example_config), "--db",
                               str(tmp_path / "c.db"), *FAST], input=stdin,
                              capture_output=True, timeout=120, preexec_fn=limit_memory)

    for run, said in [(scopeguard("classify", "-f", "/dev/zero"), "/dev/zero holds more "
                       "than 8 MB"),
                      (scopeguard("classify", "-f", "-", stdin=b"y\n" * 5_000_000),
                       "standard input holds more than 8 MB"),
                      (scopeguard("audit", "--from-file", "/dev/zero", "-q"),
                       "scopeguard ran out of memory reading or working on /dev/zero")]:
        stderr = run.stderr.decode()
        assert run.returncode == 2 and said in stderr, stderr[-2000:]
        assert "Traceback" not in stderr


def test_a_db_of_another_program_is_refused_and_left_as_it_was(runner, tmp_path,
                                                               example_config):
    """--db naming another program's SQLite file: scopeguard added its 11 tables (and WAL
    mode) to it, or, where a name clashed, said to free disk space."""
    import sqlite3

    other = tmp_path / "places.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, url TEXT)")
        conn.execute("CREATE TABLE history (visited TEXT)")  # a name scopeguard uses too
        conn.execute("INSERT INTO bookmarks (url) VALUES ('https://example.org')")
    conn.close()
    kept = other.read_bytes()
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db", str(other),
                                 *FAST, "-t", "Export to CSV"])
    assert result.exit_code == 2, result.output
    assert "is a SQLite database of another program (tables bookmarks)" in \
        result.stderr and "Fix: pass --db" in result.stderr
    assert other.read_bytes() == kept and not (tmp_path / "places.sqlite-wal").exists()
    fresh = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                str(tmp_path / "c.db"), *FAST, "-t", "Export to CSV"])
    again = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                str(tmp_path / "c.db"), *FAST, "-t", "Export to CSV"])
    assert fresh.exit_code == 0 and again.exit_code == 0, again.output  # ours: used


@pytest.mark.parametrize("text", ["null", '"str"', "42", "true", "Export to CSV"])
def test_a_json_request_file_that_is_no_object_is_refused(runner, tmp_path, example_config,
                                                          text):
    """classify -f r.json holding null, a string or a number classified it as a title
    ('request: null'), exit 0."""
    path = tmp_path / "r.json"
    path.write_text(text + "\n")
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "-f", str(path)])
    assert result.exit_code == 2, result.output
    assert "a .json request is one JSON object" in result.stderr


def test_a_request_file_past_the_limit_is_named(runner, tmp_path, example_config):
    """classify -f big.md said 'request: body is 1,199,999 characters', not which file."""
    path = tmp_path / "big.md"
    path.write_text("Export to CSV\n" + "x" * 1_200_000)
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), *FAST, "-f", str(path)])
    assert result.exit_code == 2 and f"{path} request: body is 1,200,000 characters" in \
        result.stderr


def test_a_bad_model_in_the_positioning_file_names_the_file_and_its_key(runner, tmp_path,
                                                                        example_config):
    """The error said to pass --model, not that the file's 'model' key named the model."""
    config = tmp_path / "scopeguard.yml"
    config.write_text("model: /nope/model\n" + example_config.read_text())
    result = runner.invoke(cli, ["classify", "-c", str(config), "--db", str(tmp_path / "c.db"),
                                 "-t", "Export to CSV"])
    assert result.exit_code == 2, result.output
    assert f"{config}: model: model '/nope/model' is not a local directory" in result.stderr
    assert "correct (or remove) the 'model' key there" in result.stderr
    given = runner.invoke(cli, ["classify", "-c", str(config), "--db", str(tmp_path / "c.db"),
                                "--model", "/nope/other", "-t", "Export to CSV"])
    assert given.exit_code == 2 and "'model' key" not in given.stderr  # --model named it
