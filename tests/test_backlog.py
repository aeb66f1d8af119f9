import json

import pytest

from scopeguard.backlog import (
    MAX_BODY,
    Request,
    body_field,
    check_request,
    is_feature_request,
    read_backlog,
    resolve_customer,
)
from scopeguard.errors import InputError
from scopeguard.positioning import CustomerRule, Filters


def test_example_backlog_loads(example_backlog):
    items = read_backlog(example_backlog)
    assert len(items) >= 60
    assert {r.label for r in items} == {"core", "generalizable", "one_off"}
    assert len({r.customer for r in items}) >= 20
    assert all(r.id and r.title and r.created_at and r.url for r in items)


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"id": "1", "title": "ok"}\n{"id": "2", "title": \n')
    with pytest.raises(InputError, match=r"b.jsonl line 2: not valid JSON"):
        read_backlog(path)
    path.write_text('{"id": "1", "title": "a"}\n{"id": "1", "title": "b"}\n')
    with pytest.raises(InputError, match="id '1' appears twice"):
        read_backlog(path)
    # '2' is written once: the row without an id is given its line number, which says so
    path.write_text('{"id": "2", "title": "a"}\n{"title": "implicit"}\n')
    with pytest.raises(InputError, match="appears twice \\(a request without an id is given "
                                         "its line number"):
        read_backlog(path)
    path.write_text('{"id": "1", "author": "x"}\n')
    with pytest.raises(InputError, match="line 1: has neither 'title' nor 'body'"):
        read_backlog(path)


def test_jsonl_lines_end_at_newline_only(tmp_path):
    """JSON keeps U+2028, U+2029 and NEL raw inside strings (a relabels row written by an
    older scopeguard does): they are not line ends, and \\r\\n is one."""
    path = tmp_path / "b.jsonl"
    rows = [{"id": "1", "title": "a", "body": "one\u2028two\u2029three\x85four"},
            {"id": "2", "title": "b"}]
    path.write_bytes("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
                     .encode("utf-8") + b"\r\n")
    items = read_backlog(path)
    assert [r.id for r in items] == ["1", "2"]
    assert items[0].body == "one\u2028two\u2029three\x85four"
    path.write_text('{"id": "1", "title": "ok"}\r\n{"id": "2", "title": \r\n')
    with pytest.raises(InputError, match=r"b.jsonl line 2: not valid JSON"):
        read_backlog(path)


def test_csv_backlog_with_labels_column(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("id,title,body,customer,labels\n7,Dark mode,please,Acme,\"enhancement, ui\"\n")
    [r] = read_backlog(path)
    assert (r.id, r.customer, r.labels) == ("7", "Acme", ("enhancement", "ui"))
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="CSV header needs a 'title' or 'body'"):
        read_backlog(path)


def test_csv_fields_keep_their_line_breaks_and_an_open_quote_is_an_error(tmp_path):
    """Quoted fields hold line breaks (\\n, U+2028...) and bodies past csv's 128 KB default;
    a quote left open is an error naming its line, not the rows after it swallowed."""
    p = tmp_path / "b.csv"
    body = "word " * 40_000  # 200 KB: under the body limit
    p.write_text('id,title,body\n1,multi,"line one\nline two\n\nline four"\n'
                 f'2,sep,"a\u2028b\x85c"\n3,big,{body}\n4,x,y\n', encoding="utf-8")
    rows = read_backlog(p)
    assert [r.id for r in rows] == ["1", "2", "3", "4"]
    assert rows[0].body == "line one\nline two\n\nline four"
    assert rows[1].body == "a\u2028b\x85c" and rows[2].body == body
    p.write_text('id,title,body\n\n1,ok,fine\n2,"unterminated,body\n3,x,y\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 4: a quoted field that begins here is never "
                                         "closed. Fix: close it"):
        read_backlog(p)
    # as lenient as before otherwise: a space after a closing quote, text after it
    p.write_text('id,title,body\n1,"Export" ,a body\n2,"a"x,b\n', encoding="utf-8")
    assert [(r.title, r.body) for r in read_backlog(p)] == [("Export ", "a body"), ("ax", "b")]


def test_numbers_too_long_for_python_and_lone_surrogates_anywhere(tmp_path):
    """A 5,000-digit number is a JSON error naming the line; a lone surrogate in any text
    field (id, url, date too) is repaired, as in the title and body."""
    p = tmp_path / "b.jsonl"
    p.write_text('{"id": "1", "title": "ok"}\n{"id": "2", "title": ' + "1" * 5000 + '}\n')
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        read_backlog(p)
    p.write_text(json.dumps({"id": "S\ud800", "title": "t", "url": "http://x/\udc00",
                             "created_at": "2024-01-01\udc00"}) + "\n")
    [r] = read_backlog(p)
    for value in (r.id, r.url, r.created_at):
        value.encode("utf-8")  # no lone surrogate left
    assert r.id.startswith("S") and r.created_at.startswith("2024-01-01")


@pytest.mark.parametrize("field, value", [("id", {"a": 1}), ("title", ["x"]),
                                          ("id", float("nan")), ("title", float("inf"))])
def test_a_field_that_is_not_text_is_named(field, value):
    from scopeguard.backlog import request_from_dict

    data = {"id": "1", "title": "t", "body": "b", field: value}
    with pytest.raises(InputError, match=f"'{field}' is .*expected text"):
        request_from_dict(data, "req.jsonl line 1")


def test_json_list_backlog(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps([{"id": "x", "title": "t", "label": "core"}]))
    assert read_backlog(path)[0].label == "core"
    path.write_text(json.dumps([{"id": "x", "title": "t", "label": "maybe"}]))
    with pytest.raises(InputError, match="label 'maybe' is not one of"):
        read_backlog(path)


def test_fields_are_read_across_windows_line_ends_and_long_lines():
    from scopeguard.backlog import body_field

    assert body_field("### Customer\r\n\r\nAcme Corp\r\n", "Customer") == "Acme Corp"
    assert body_field("**Customer:** Acme  \r\nmore", "customer") == "Acme"
    assert body_field("Customer: a" + " " * 5000 + "b", "Customer") == "a" + " " * 5000 + "b"


def test_a_backlog_path_that_is_not_a_list_file_says_the_fix(tmp_path):
    """A JSON object, a directory: named with the fix; a pipe (--from-file <(...)) is read
    as a file (it was 'backlog file not found')."""
    import os
    import threading

    path = tmp_path / "b.json"
    path.write_text(json.dumps({"requests": [{"title": "t"}]}))
    with pytest.raises(InputError, match="got dict. Fix: put the requests in a list"):
        read_backlog(path)
    with pytest.raises(InputError, match="is a directory. Fix: pass the backlog file"):
        read_backlog(tmp_path)
    with pytest.raises(InputError, match="backlog file not found"):
        read_backlog(tmp_path / "none.jsonl")
    pipe = tmp_path / "piped.jsonl"
    os.mkfifo(pipe)

    def send():
        with open(pipe, "w") as out:
            out.write('{"id": "1", "title": "Dark mode"}\n{"id": "2", "title": "SMS"}\n')

    writer = threading.Thread(target=send)
    writer.start()
    assert [r.title for r in read_backlog(pipe)] == ["Dark mode", "SMS"]
    writer.join()


def test_empty_and_huge_requests_refused():
    with pytest.raises(InputError, match="title and body are both empty"):
        check_request(Request(id="9", title=" ", body=""))
    with pytest.raises(InputError, match=r"body is 1,000,001 characters .* Fix:"):
        check_request(Request(id="9", title="t", body="x" * (MAX_BODY + 1)))


def test_body_field_line_and_issue_form():
    assert body_field("**Clinic:** Riverside Vets\nmore", "Clinic") == "Riverside Vets"
    assert body_field("Customer: Acme Ltd", "customer") == "Acme Ltd"
    assert body_field("### Customer\n\nGlobex\n\n### Other\n", "Customer") == "Globex"
    assert body_field("### Customer\n\n_No response_\n", "Customer") == ""


@pytest.mark.parametrize("rule,expected", [
    (CustomerRule("author"), "ann"),
    (CustomerRule("org"), "acme-org"),
    (CustomerRule("label", label_prefix="customer:"), "Globex"),
    (CustomerRule("field", field="Clinic"), "Riverside Vets"),
])
def test_resolve_customer(rule, expected):
    r = Request(id="1", title="t", body="Clinic: Riverside Vets", author="ann", org="acme-org",
                labels=("enhancement", "customer: Globex"))
    assert resolve_customer(r, rule) == expected


def test_explicit_customer_wins_and_fallback_is_author():
    r = Request(id="1", title="t", author="ann", customer="Initech")
    assert resolve_customer(r, CustomerRule("label")) == "Initech"
    r = Request(id="1", title="t", author="ann")
    assert resolve_customer(r, CustomerRule("field", field="Clinic")) == "ann"
    r = Request(id="1", title="t", author="bob@Example.com")
    assert resolve_customer(r, CustomerRule("org")) == "example.com"


def test_feature_request_filter():
    f = Filters()
    assert is_feature_request(Request(id="1", title="Add X", labels=("enhancement",)), f)[0]
    ok, why = is_feature_request(Request(id="1", title="Add X", labels=("Bug",)), f)
    assert not ok and "bug" in why
    assert not is_feature_request(Request(id="1", title="[Bug] crash"), f)[0]
    strict = Filters(require_labels=("feature",))
    ok, why = is_feature_request(Request(id="1", title="Add X"), strict)
    assert not ok and "feature" in why


def test_csv_columns_in_any_case_and_near_misses_refused(tmp_path):
    """A spreadsheet's "Title" column is the title; a misspelt "tittle" would leave every
    title empty, and a column given twice would keep one silently: both refused, naming
    the fix. Other columns stay extra fields, their names as written."""
    path = tmp_path / "b.csv"
    path.write_text("ID,Title,Body,Clinic\n1,Dark mode,please,Oakfield\n")
    [request] = read_backlog(path)
    assert (request.id, request.title, request.extra) == ("1", "Dark mode",
                                                          {"Clinic": "Oakfield"})
    for header, words in (("id,tittle,body", "did you mean 'title'?"),
                          ("id,title,authors", "did you mean 'author'?"),
                          ("id,title,Customer_", "did you mean 'customer'?"),
                          ("id,title,Title", "'title' appears twice")):
        path.write_text(f"{header}\n1,a,b\n")
        with pytest.raises(InputError, match=words):
            read_backlog(path)
    # a CRM's "Customer ID" or "customer_id" beside its customer, an "authors" column
    # beside the author: other columns, not misspellings
    for header in ("id,title,Customer ID", "id,title,customer,customer_id",
                   "id,title,author,authors"):
        path.write_text(f"{header}\n" + ",".join("1abc"[:header.count(",") + 1]) + "\n")
        [request] = read_backlog(path)
        assert request.title == "a" and list(request.extra) == [header.split(",")[-1]]


def test_tab_and_semicolon_separated_files_are_read(tmp_path):
    """Excel's "Unicode text" (UTF-16 with a BOM, tabs between columns) and a spreadsheet
    of a locale whose decimal mark is the comma (semicolons): 'needs a title column
    (found ['id\\ttitle\\tbody'])', though the header was there."""
    tsv = tmp_path / "excel.csv"
    tsv.write_bytes("id\ttitle\tbody\n1\tSMS reminders, please\tFor clinics; all of them\n"
                    "2\tExport\t\n".encode("utf-16"))
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text('id;title;body\n1;"SMS reminders; please";For clinics, all\n')
    [first, second] = read_backlog(tsv)
    assert (first.id, first.title, first.body) == ("1", "SMS reminders, please",
                                                   "For clinics; all of them")
    assert (second.id, second.title) == ("2", "Export")
    [row] = read_backlog(semicolons)
    assert (row.title, row.body) == ("SMS reminders; please", "For clinics, all")
    commas = tmp_path / "commas.csv"  # a comma in the header: commas it is, as before
    commas.write_text('id,title\n1,"a;b\tc"\n')
    assert read_backlog(commas)[0].title == "a;b\tc"
    named = tmp_path / "named.csv"  # a comma inside a column's name decides nothing
    named.write_text("id\ttitle\tCustomer (name, org)\n1\tExport\tAcme, Inc\n")
    [row] = read_backlog(named)
    assert (row.title, row.extra) == ("Export", {"Customer (name, org)": "Acme, Inc"})


def test_a_request_giving_a_key_twice_is_refused(tmp_path, runner, example_config):
    """{"title": "a", "title": "b"} kept "b" without a word, where a positioning file's
    repeated key is refused: in a backlog line, a JSON list and a classify -f request."""
    from scopeguard.cli import cli

    lines = tmp_path / "b.jsonl"
    lines.write_text('{"id": "1", "title": "a"}\n{"id": "2", "title": "a", "title": "b"}\n')
    with pytest.raises(InputError, match="b.jsonl line 2: not valid JSON \\(the key 'title' "
                                         "appears twice"):
        read_backlog(lines)
    listed = tmp_path / "b.json"
    listed.write_text('[{"id": "1", "body": "x", "body": "y"}]')
    with pytest.raises(InputError, match="the key 'body' appears twice"):
        read_backlog(listed)
    one = tmp_path / "r.json"
    one.write_text('{"title": "a", "title": "b"}')
    result = runner.invoke(cli, ["classify", "-c", str(example_config), "--db",
                                 str(tmp_path / "c.db"), "--model", "hashing", "-f", str(one)])
    assert result.exit_code == 2 and "the key 'title' appears twice" in result.stderr
