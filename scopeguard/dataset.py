"""Labelled datasets for ``eval`` and ``calibrate``: products and their decided requests.

A products directory holds one YAML file per product, either a scopeguard
positioning file or the research format (``slug, name, category, positioning:
[...], features: [...], non_goals: [...]``). A requests file is JSONL with
``product`` (the slug; optional when there is one product), ``label`` and,
optionally, ``shipped_as``: the feature a request caused. That feature is masked
when the request is scored, so the product is judged as it was when the request
came in (the leakage trap: today's feature list describes today's product).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .backlog import Request, read_backlog
from .errors import ConfigError, InputError
from .positioning import Item, Positioning, parse_positioning, read_yaml


@dataclass(frozen=True)
class Product:
    slug: str
    positioning: Positioning


def _research_format(data: dict, source: str) -> Positioning:
    """The research format: positioning sentences, features and non-goals as strings."""
    for key in ("name", "positioning", "features"):
        if key not in data:
            raise ConfigError(source, f"'{key}' is missing.",
                              "a product file needs name, positioning and features.", key=key)
    statements = [s for s in data["positioning"] if isinstance(s, str) and s.strip()]
    return Positioning(
        product=str(data["name"]), category=str(data.get("category") or ""),
        target_customer="", need="", main_value="",
        statements=tuple(statements),
        features=tuple(Item(name=str(f)) for f in data["features"]),
        non_goals=tuple(Item(name=str(n)) for n in data.get("non_goals") or ()
                        if not str(n).startswith("(No explicit")),
        source=source)


def load_products(directory: str | Path) -> dict[str, Product]:
    """Every ``*.yml``/``*.yaml`` product file in ``directory``, by slug."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: products directory not found. Fix: pass --products "
                         "with a directory of product YAML files.")
    products: dict[str, Product] = {}
    for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(str(path), f"cannot be read ({exc}).",
                              "make it a readable UTF-8 YAML file.") from None
        data = read_yaml(text, str(path))  # the positioning file's checks: no key twice...
        if not isinstance(data, dict):
            raise ConfigError(str(path), f"is {type(data).__name__}, not a product file "
                              "(a YAML mapping).", "move other files out of the products "
                              "directory, or write the product's positioning in it.")
        if "positioning" in data and "slug" in data:
            positioning = _research_format(data, str(path))
            slug = str(data["slug"])
        else:
            positioning = parse_positioning(data, source=str(path))
            slug = path.stem if path.stem not in ("scopeguard", "positioning") else \
                positioning.product.lower()
        products[slug] = Product(slug, positioning)
    if not products:
        raise InputError(f"{directory}: no product YAML files found. Fix: pass --products "
                         "with a directory of product YAML files (NAME.yml).")
    return products


@dataclass(frozen=True)
class Labelled:
    """A decided request: its product, its label and what scoring needs to know.

    ``product_file`` (a corpus's ``slug/YYYY``) is the positioning as of the request;
    without it the product's one file is masked: ``mask``, an exact fragment of a feature
    line, else a guess from ``shipped_as``.
    """

    request: Request
    product: str
    label: str
    shipped_as: str = ""
    outcome: str = ""  # the maintainers' decision (corpus): accepted, declined, ...
    rule_step: int = 0  # the step of LABELS.md that decided ``label`` (corpus)
    product_file: str = ""
    readers: tuple[Any, ...] = ()  # corpus.Reading, one per blind reader
    mask: str = ""
    deciding_anchor: str = ""


def load_labelled(path: str | Path, products: dict[str, Product]) -> list[Labelled]:
    """The labelled requests in ``path`` for the given products."""
    requests = read_backlog(path, option="")
    out = []
    for r in requests:
        slug = str(r.extra.get("product") or "")
        if not slug:
            if len(products) != 1:
                raise InputError(f"{path}: request {r.id} has no 'product' and there are "
                                 f"{len(products)} products. Fix: add a product field.")
            slug = next(iter(products))
        if slug not in products:
            raise InputError(f"{path}: request {r.id} names product {slug!r}, not in "
                             f"{sorted(products)}. Fix: add its YAML to the products directory.")
        if not r.label:
            raise InputError(f"{path}: request {r.id} has no label. Fix: every request in a "
                             "labelled file needs label core, generalizable or one_off.")
        shipped = str(r.extra.get("shipped_as") or "")
        # A shipped_as that is an exact fragment of one feature line is masked exactly;
        # any other is guessed at (mask_feature) and counted by masking_report.
        exact = shipped if _exact_fragment(products[slug].positioning, shipped) else ""
        out.append(Labelled(r, slug, r.label, shipped, mask=exact))
    return out


def _exact_fragment(positioning: Positioning, fragment: str) -> bool:
    low = fragment.strip().lower()
    return bool(low) and sum(low in f.text.lower() for f in positioning.features) == 1


def masking_report(items: list[Labelled]) -> dict[str, list[str]]:
    """Which items are masked exactly and which by a guess from ``shipped_as``."""
    exact = [i.request.id for i in items if i.mask]
    guessed = [i.request.id for i in items if i.shipped_as and not i.mask and not i.product_file]
    return {"exact": exact, "guessed": guessed}


def read_labels_file(path: str | Path) -> list[dict]:
    """Raw JSON objects of a JSONL labels file (for relabel records)."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {n}: not valid JSON ({exc.msg}).") from None
    return rows


# --- masking --------------------------------------------------------------------------------

_OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
_WORD = re.compile(r"[a-z][a-z0-9+#]{2,}")
_STOP = {"and", "the", "support", "option", "options", "flag", "syntax", "auto", "new", "for"}


def _split_top(text: str) -> list[str]:
    """Split at ',', ';' and ' and ' outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        depth += ch == "("
        depth -= ch == ")"
        sep = 0
        if depth == 0:
            if ch in ",;":
                sep = 1
            elif text.startswith(" and ", i):
                sep = 5
        if sep:
            parts.append(text[start:i].strip())
            start = i + sep
            i += sep
            continue
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _words(text: str) -> set[str]:
    return {w.rstrip("s") for w in _WORD.findall(text.lower())} - _STOP


def mask_feature(text: str, shipped_as: str) -> str | None:
    """``text`` without the parts describing ``shipped_as``; ``None`` when nothing is left.

    ``shipped_as`` names options (``--size``) and values (``--type empty``) or words
    (``light/dark theme``). A feature line listing several capabilities ("Filters:
    --type (file, ...), --size, ...") loses only the parts that describe the shipped
    one: the option's entry, or only the value inside the option's parentheses.
    """
    options = {o.lower() for o in _OPTION.findall(shipped_as)}
    # "--type empty": the value after an option; "($LESSOPEN support)" only restates it.
    values = _words(re.sub(r"\([^)]*\)", " ", _OPTION.sub(" ", shipped_as)))
    words = _words(shipped_as)  # when no option appears in the feature text
    low = text.lower()
    matched_options = {o for o in options
                       if re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", low)}

    def option_hit(part: str) -> bool:
        return any(re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", part.lower())
                   for o in matched_options)

    def word_hit(part: str) -> bool:
        # One shared word ("type") is too weak on its own outside a list of items.
        return len(words) >= 2 and len(_words(part) & words) >= 2

    def without_inner(part: str, hit) -> str | None:
        """The part with the hitting items of its parentheses removed, if that is where
        the hit is; None when the part itself must go."""
        inner = re.search(r"\((.*)\)", part)
        if not inner:
            return None
        items = _split_top(inner.group(1))
        kept = [i for i in items if not hit(i)]
        if len(kept) == len(items):
            return None
        return (part.replace(inner.group(0), f"({', '.join(kept)})") if kept else
                part.replace(inner.group(0), "")).strip()

    head, sep, tail = text.partition(": ")
    if not sep or "(" in head:
        head, tail = "", text
    # Words of the shipped name that the heading does not already say pick out one list
    # item ("nushell" in "Shell integrations: bash, zsh, nushell").
    distinctive = words - _words(head)

    verbatim = shipped_as.strip().lower()
    # When an item names the shipped thing verbatim ("LS_COLORS"), only such items go.
    by_name = len(verbatim) >= 4 and any(verbatim in p.lower() for p in _split_top(tail))

    def item_hit(part: str) -> bool:
        if by_name:
            return verbatim in part.lower()
        if head:
            return bool(_words(part) & distinctive)
        return word_hit(part)

    kept: list[str] = []
    changed = False
    for part in _split_top(tail):
        if matched_options and option_hit(part):
            changed = True
            if values:  # "--type empty": only the value went in with the request
                part = without_inner(part, lambda item: bool(_words(item) & values))
            else:
                part = None
        elif not matched_options and item_hit(part):
            changed = True
            part = without_inner(part, lambda item: bool(_words(item) & words))
            if part and word_hit(part):
                part = None
        if part:
            kept.append(part)
    if not changed:
        # The heading names the shipped capability ("Custom commands: ..."): all of it goes.
        if head and ((matched_options and option_hit(head)) or word_hit(head)
                     or (words and words <= _words(head))):
            return None
        return text
    if not kept:
        return None
    return f"{head}: {', '.join(kept)}" if head else ", ".join(kept)


def as_of_request(positioning: Positioning, shipped_as: str) -> Positioning:
    """The positioning without the feature a request caused."""
    if not shipped_as:
        return positioning
    features = []
    for f in positioning.features:
        masked = mask_feature(f.text, shipped_as)
        if masked == f.text:
            features.append(f)
        elif masked:
            features.append(Item(name=masked))
    return replace(positioning, features=tuple(features) or positioning.features[:0])
