"""The positioning file: what the product is for, what it does, what it will not do.

``scopeguard.yml`` (or ``.github/scopeguard.yml``) is validated against the JSON
Schema shipped beside this module (``positioning.schema.json``). The validator
below understands the subset of JSON Schema that file uses, so that every error
can name the file, the key and the fix instead of dumping a schema path.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, time
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("positioning.schema.json")
DEFAULT_FILENAMES = ("scopeguard.yml", "scopeguard.yaml", ".github/scopeguard.yml",
                     ".github/scopeguard.yaml")

LABELS = ("core", "generalizable", "one_off")


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of the positioning file."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Item:
    """A feature or non-goal: a short name and what it means."""

    name: str
    description: str = ""
    instead: str = ""  # non-goals only: the existing mechanism to point to

    @property
    def text(self) -> str:
        """The text that gets embedded."""
        if self.description and self.description != self.name:
            return f"{self.name}: {self.description}"
        return self.name


@dataclass(frozen=True)
class CustomerRule:
    """How to tell which customer asked: see the schema's ``customer`` section."""

    source: str = "author"
    label_prefix: str = "customer:"
    field: str = "Customer"


@dataclass(frozen=True)
class Filters:
    """Which tracker issues count as feature requests."""

    skip_labels: tuple[str, ...] = ("bug", "question", "documentation", "duplicate", "invalid")
    require_labels: tuple[str, ...] = ()
    skip_title_prefixes: tuple[str, ...] = ("bug:", "[bug]", "question:", "[question]")
    # Issues opened by bots (GitHub's type Bot or a name[bot] login; Jira Cloud's app
    # accounts) are not customers' requests: Renovate's dashboard, Dependabot, automation.
    skip_bots: bool = True
    skip_authors: tuple[str, ...] = ()  # logins (GitHub) or names, emails, account ids (Jira)
    # Tracker issue types that are not feature requests (GitHub's issue types, Jira's).
    skip_issue_types: tuple[str, ...] = ("Bug", "Task", "Sub-task", "Subtask", "Epic",
                                         "Incident", "Problem", "Change", "Test")


@dataclass(frozen=True)
class JiraSettings:
    projects: tuple[str, ...] = ()
    issue_types: tuple[str, ...] = ()
    customer_field: str = ""


@dataclass(frozen=True)
class Positioning:
    """A validated positioning file."""

    product: str
    category: str
    target_customer: str
    need: str
    main_value: str
    features: tuple[Item, ...]
    alternative: str = ""
    uniqueness: str = ""
    statements: tuple[str, ...] = ()
    non_goals: tuple[Item, ...] = ()
    ideal_customer: str = ""
    ideal_traits: tuple[str, ...] = ()
    customer: CustomerRule = field(default_factory=CustomerRule)
    labels: dict[str, str] = field(default_factory=lambda: {
        "core": "scope: core", "generalizable": "scope: generalizable",
        "one_off": "scope: one-off"})
    thresholds: dict[str, float] = field(default_factory=dict)
    filters: Filters = field(default_factory=Filters)
    jira: JiraSettings = field(default_factory=JiraSettings)
    model: str | None = None
    calibration: str | None = None
    source: str = "<memory>"
    # How closed issues say what was decided (scopeguard.history.HistoryRules' fields).
    history: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def positioning_statements(self) -> list[tuple[str, str]]:
        """(kind, text) pairs that say what the product is for, in file order."""
        out = [("category", self.category),
               ("target customer", self.target_customer),
               ("need", self.need),
               ("main value", self.main_value)]
        if self.uniqueness:
            out.append(("uniqueness", self.uniqueness))
        out += [("statement", s) for s in self.statements]
        return [(kind, text) for kind, text in out if text]

    def label_name(self, label: str) -> str:
        return self.labels[label]


# --- loading -------------------------------------------------------------------------------


def find_positioning(start: str | Path = ".") -> Path:
    """The positioning file in ``start`` (a file or a directory)."""
    start = Path(start)
    if start.is_file():
        return start
    for name in DEFAULT_FILENAMES:
        candidate = start / name
        if candidate.is_file():
            return candidate
    if start.suffix in (".yml", ".yaml", ".json"):
        raise ConfigError(str(start), "file not found.",
                          "check the path, or run 'scopeguard init' to write one.")
    raise ConfigError(
        str(start), "no positioning file found (looked for "
        + ", ".join(DEFAULT_FILENAMES) + ").",
        "create scopeguard.yml (see examples/scopeguard.yml) or pass --config PATH.")


def load_positioning(path: str | Path) -> Positioning:
    """Read, validate and return the positioning file at ``path``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(str(path), f"is {size / 1e6:.1f} MB; a positioning file is a few "
                              f"KB (at most {MAX_FILE_BYTES // 1_000_000} MB is read).",
                              "point --config at the positioning file, not at data.")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found.", "check the path or pass --config PATH.") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot be read ({exc}).",
                          "make it a readable UTF-8 YAML file.") from None
    return parse_positioning(read_yaml(text, str(path)), source=str(path))


MAX_FILE_BYTES = 2_000_000
MAX_DEPTH = 40  # a positioning file nests four levels; deeper is a mistake or an attack


def read_yaml(text: str, source: str) -> Any:
    """Safe YAML with the mistakes YAML lets through refused: a key given twice (YAML keeps
    the last silently), nesting deeper than :data:`MAX_DEPTH` (a recursion bomb), and
    aliases (``*name``: a list that holds itself, or a "billion laughs" of aliases whose
    expansion never ends; a positioning file has no use for them)."""
    import yaml  # lazy: only needed when a file is read

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                raise ConfigError(source, f"uses the YAML alias *{event.anchor} at line "
                                  f"{event.start_mark.line + 1}.",
                                  "write the value out in full: positioning files take no "
                                  "anchors or aliases.")
            return super().compose_node(parent, index)

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict, set)):  # YAML's "? [a, b]": no key of ours
                raise ConfigError(source, f"has a list or mapping as a key at line "
                                  f"{key_node.start_mark.line + 1}.",
                                  "write each key as plain text ('features:', 'name:').")
            if key in seen:
                raise ConfigError(source, f"the key {key!r} appears twice (lines "
                                  f"{seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                  "YAML would keep only the last.",
                                  "keep one of them (merge their content).")
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        _check_depth(text, source)
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, f"is not valid YAML{where}: {problem}.",
                          "fix the YAML syntax (indentation, quotes, colons).") from None
    except RecursionError:
        raise ConfigError(source, f"nests deeper than {MAX_DEPTH} levels.",
                          "write a flat positioning file (see examples/scopeguard.yml).") \
            from None


def _check_depth(text: str, source: str) -> None:
    """Refuse deep nesting from the token stream, before the parser recurses into it."""
    import yaml

    depth = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, yaml.BlockMappingStartToken | yaml.BlockSequenceStartToken |
                      yaml.FlowMappingStartToken | yaml.FlowSequenceStartToken):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(source, f"nests deeper than {MAX_DEPTH} levels.",
                                  "write a flat positioning file (see examples/scopeguard.yml).")
        elif isinstance(token, yaml.BlockEndToken | yaml.FlowMappingEndToken |
                        yaml.FlowSequenceEndToken):
            depth -= 1


def parse_positioning(data: Any, source: str = "<memory>") -> Positioning:
    """Validate a parsed positioning document and build a :class:`Positioning`."""
    data = _sound(data)
    if data is None:
        raise ConfigError(source, "is empty.",
                          "write at least product, category, target_customer, need, "
                          "main_value and features (see examples/scopeguard.yml).")
    validate(data, schema(), source)
    data = _without_nulls(data)  # 'key:' with no value is absent, at every level
    features = tuple(_item(x) for x in data["features"])
    non_goals = tuple(_item(x) for x in data.get("non_goals") or ())  # "non_goals:" alone: none
    ideal = data.get("ideal_customer") or {}
    customer = CustomerRule(**(data.get("customer") or {}))
    if customer.source == "field" and "field" not in (data.get("customer") or {}):
        raise ConfigError(source, "customer.source is 'field' but no field name is given.",
                          "add customer.field, e.g. 'field: Customer'.", key="customer.field")
    labels = {**Positioning.__dataclass_fields__["labels"].default_factory(),
              **{k: v.strip() for k, v in (data.get("labels") or {}).items()}}
    for key, name in labels.items():  # a tracker refuses them, or shows another label
        if re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", name):
            raise ConfigError(source, f"{name!r} has a line break or control character.",
                              "write the label name on one line, e.g. 'scope: core'.",
                              key=f"labels.{key}")
    if len(set(labels.values())) != len(labels):
        raise ConfigError(source, f"label names must differ, got {labels}.",
                          "give core, generalizable and one_off distinct names.", key="labels")
    filters_data = data.get("filters") or {}
    filters = Filters(**{k: v if isinstance(v, bool) else tuple(v)
                         for k, v in filters_data.items()})
    jira = data.get("jira") or {}
    return Positioning(
        product=data["product"].strip(),
        category=data["category"].strip(),
        target_customer=(data.get("target_customer") or "").strip(),
        need=(data.get("need") or "").strip(),
        main_value=(data.get("main_value") or "").strip(),
        alternative=data.get("alternative", "").strip(),
        uniqueness=data.get("uniqueness", "").strip(),
        statements=tuple(s.strip() for s in data.get("statements") or ()),
        features=features,
        non_goals=non_goals,
        ideal_customer=(ideal.get("description") or "").strip(),
        ideal_traits=tuple(ideal.get("traits") or ()),
        customer=customer,
        labels=labels,
        thresholds=dict(data.get("thresholds") or {}),
        filters=filters,
        jira=JiraSettings(projects=tuple(jira.get("projects", ())),
                          issue_types=tuple(jira.get("issue_types", ())),
                          customer_field=jira.get("customer_field", "")),
        model=data.get("model"),
        calibration=data.get("calibration"),
        source=source,
        history={k: tuple(v) for k, v in (data.get("history") or {}).items()},
    )


def _without_nulls(value: Any) -> Any:
    """``value`` with every mapping's null values left out ("instead:" with nothing after it
    reads as no instead; the validator has refused a required key left empty)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _sound(value: Any) -> Any:
    """Every string of a parsed document repaired for UTF-8 (YAML's "\\ud83d\\udc4b" is
    two lone surrogates, not one emoji)."""
    from .clean import sound_text

    if isinstance(value, str):
        return sound_text(value)
    if isinstance(value, dict):
        return {_sound(k): _sound(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sound(v) for v in value]
    return value


def _item(value: str | dict[str, str]) -> Item:
    if isinstance(value, str):
        return Item(name=value.strip())
    return Item(name=value["name"].strip(), description=value.get("description", "").strip(),
                instead=value.get("instead", "").strip())


# --- a small JSON Schema validator with readable errors -------------------------------------

_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
          "boolean": bool}
_TYPE_WORDS = {"object": "a mapping (key: value lines)", "array": "a list ('- item' lines)",
               "string": "text", "integer": "a whole number", "number": "a number",
               "boolean": "true or false"}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, date | time):  # YAML reads 2024-01-01 as a date, 12:30 as a time
        return f"the date or time {value.isoformat()} (YAML reads it as one unless quoted)"
    text = str(value)
    # a short value is quoted to help; a long one may be a whole other file (a .env with
    # a token in it): its length only
    return f"the text {text!r}" if len(text) <= 40 else f"a text of {len(text):,} characters"


def _type_fix(path: str, kinds: str, value: Any, hint: str) -> str:
    """What to do about a value of the wrong type: the change first, then what the key is
    for (the schema's description), so the fix is never only a description."""
    where = path or "the file"
    if isinstance(value, date | time) and "text" in kinds:
        change = f"quote it ({path.rpartition('.')[2] or 'key'}: \"{value.isoformat()}\")"
    else:
        change = f"make {where} {kinds}"
    return f"{change}; {where}: {hint}" if hint else f"{change}."


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def validate(value: Any, node: dict[str, Any], source: str, path: str = "") -> None:
    """Check ``value`` against schema ``node``; raise ConfigError naming the key and the fix."""
    key = path or "(top level)"
    hint = node.get("description", "")
    if "oneOf" in node:
        errors = []
        for option in node["oneOf"]:
            try:
                validate(value, option, source, path)
                return
            except ConfigError as exc:
                errors.append(exc)
        # Report the error of the option whose type matched, if any: it is the most specific.
        for option, exc in zip(node["oneOf"], errors, strict=True):
            if _is_type(value, option.get("type", "")):
                raise exc
        kinds = " or ".join(_TYPE_WORDS[o["type"]] for o in node["oneOf"])
        raise ConfigError(source, f"expected {kinds}, got {_describe(value)}.",
                          _type_fix(path, kinds, value, hint), key=key)
    if "enum" in node:
        if value not in node["enum"]:
            choices = ", ".join(repr(x) for x in node["enum"])
            raise ConfigError(source, f"{_describe(value)} is not allowed.",
                              f"use one of {choices}.", key=key)
        return
    kind = node.get("type")
    if kind and not _is_type(value, kind):
        raise ConfigError(source, f"expected {_TYPE_WORDS[kind]}, got {_describe(value)}.",
                          _type_fix(path, _TYPE_WORDS[kind], value, hint), key=key)
    if kind == "string" and len(value.strip()) < node.get("minLength", 0):
        raise ConfigError(source, "is empty.", hint or "write a value.", key=key)
    if kind in ("number", "integer"):
        if not math.isfinite(value):  # .nan passes every range check, .inf is no threshold
            raise ConfigError(source, f"{value} is not a number scopeguard can use.",
                              "write a finite number, e.g. 0.5.", key=key)
        low, high = node.get("minimum"), node.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(source, f"{value} is out of range.", f"use a value {span}.",
                              key=key)
    if kind == "array":
        if len(value) < node.get("minItems", 0):
            raise ConfigError(source, "needs at least one entry.", hint, key=key)
        for i, item in enumerate(value):
            validate(item, node.get("items", {}), source, f"{path}[{i}]")
    if kind == "object":
        props = node.get("properties", {})
        if node.get("additionalProperties") is False:
            for name in value:
                if name not in props:
                    close = difflib.get_close_matches(str(name), list(props), n=1)
                    fix = (f"did you mean '{close[0]}'?" if close else
                           "remove it; allowed keys: " + ", ".join(props) + ".")
                    raise ConfigError(source, "unknown key.", fix, key=_join(path, str(name)))
        for name in node.get("required", []):
            if name not in value or value[name] is None:
                raise ConfigError(source, "is missing (required).",
                                  props.get(name, {}).get("description", "add it."),
                                  key=_join(path, name))
        for name, sub in props.items():
            if name in value and value[name] is not None:
                validate(value[name], sub, source, _join(path, name))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
