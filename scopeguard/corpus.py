"""The labelled corpus: real requests, each with its product as it was when it came in.

A corpus directory holds ``products/<slug>/<YYYY>.yml`` (the product's positioning file,
written from its docs at the last commit before that year, with a ``meta`` block:
slug, repo, as_of, commit, kind, source_urls), ``requests.jsonl`` and ``split.json``
(the held-out products). A request row carries its request-time ``label`` (decided by
readers under the rule in LABELS.md, with ``rule_step``, ``deciding_anchor`` and each
reader's own reading in ``readers``), the maintainers' real decision as ``outcome`` (with
``evidence``), ``shipped_as`` (what it became, for information), and ``product_file``:
the year whose file it is scored against. A row's optional ``mask`` names an exact
fragment of one of its file's feature lines to drop (validated on load).

Example::

    corpus = load_corpus("models/data/corpus")
    train = corpus.select(split="train")          # never the held-out products
    print(len(train.items), corpus.heldout)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .backlog import Request, check_request
from .dataset import Labelled, Product
from .errors import ConfigError, InputError
from .positioning import LABELS, Item, Positioning

OUTCOMES = ("accepted", "declined", "built_later", "general_form_built", "unknown")
# The maintainers' decision read as a scope label, for --target outcome: what they did.
OUTCOME_LABELS = {"accepted": "core", "declined": "one_off", "built_later": "generalizable",
                  "general_form_built": "generalizable"}
KINDS = ("business", "developer-tool", "consumer")
TEXT_FIELDS = ("category", "target_customer", "need", "main_value", "alternative",
               "uniqueness")


@dataclass(frozen=True)
class Reading:
    """One reader's label for a request (readers are blind to each other and the outcome)."""

    reader: str
    label: str
    rule_step: int = 0
    deciding_anchor: str = ""


@dataclass
class Corpus:
    """Products by file key (``slug/YYYY``), labelled requests, the held-out products."""

    products: dict[str, Product]
    items: list[Labelled]
    heldout: tuple[str, ...] = ()
    kinds: dict[str, str] = field(default_factory=dict)  # slug -> business | developer-tool...
    as_of: dict[str, str] = field(default_factory=dict)  # file key -> the date it was read at

    def select(self, split: str = "all", target: str = "label") -> Corpus:
        """The items of ``split`` (``train``: not held out; ``heldout``; ``all``), labelled by
        ``target`` (``label``: request-time; ``outcome``: the maintainers' decision, items
        with an unknown outcome left out)."""
        if split not in ("train", "heldout", "all"):
            raise InputError(f"split {split!r} is not train, heldout or all.")
        items = [i for i in self.items if split == "all"
                 or (i.product in self.heldout) == (split == "heldout")]
        if target == "outcome":
            items = [replace(i, label=OUTCOME_LABELS[i.outcome]) for i in items
                     if i.outcome in OUTCOME_LABELS]
        elif target != "label":
            raise InputError(f"target {target!r} is not label or outcome.")
        return Corpus(self.products, items, self.heldout, self.kinds, self.as_of)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


def _item(value: Any, where: str) -> Item:
    if isinstance(value, str) and value.strip():
        return Item(name=value.strip())
    if isinstance(value, dict) and _text(value, "name"):
        return Item(name=_text(value, "name"), description=_text(value, "description"),
                    instead=_text(value, "instead"))
    raise ConfigError(where, f"{value!r} is not a feature or non-goal.",
                      "write a string, or {name, description[, instead]}.")


def read_product_file(path: Path) -> tuple[dict[str, Any], Positioning]:
    """A corpus product file: its ``meta`` block and its positioning (fields the docs did
    not support are empty)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"is not valid YAML ({exc}).", "fix the YAML.") from None
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        raise ConfigError(str(path), "has no meta block.", "add meta: slug, repo, as_of, "
                          "commit, kind, source_urls.")
    meta = data["meta"]
    for key in ("slug", "as_of", "commit", "kind"):
        if not str(meta.get(key) or "").strip():
            raise ConfigError(str(path), f"meta.{key} is missing.", "fill it in.",
                              key=f"meta.{key}")
    if meta["kind"] not in KINDS:
        raise ConfigError(str(path), f"meta.kind {meta['kind']!r} is not one of {KINDS}.",
                          "pick one.", key="meta.kind")
    features = tuple(_item(f, str(path)) for f in data.get("features") or ())
    if not _text(data, "product") or not features:
        raise ConfigError(str(path), "needs a product name and features.", "fill them in.")
    positioning = Positioning(
        product=_text(data, "product"), category=_text(data, "category"),
        target_customer=_text(data, "target_customer"), need=_text(data, "need"),
        main_value=_text(data, "main_value"), alternative=_text(data, "alternative"),
        uniqueness=_text(data, "uniqueness"),
        statements=tuple(s.strip() for s in data.get("statements") or ()
                         if isinstance(s, str) and s.strip()),
        features=features,
        non_goals=tuple(_item(n, str(path)) for n in data.get("non_goals") or ()),
        source=str(path))
    return meta, positioning


def mask_exact(positioning: Positioning, fragment: str, where: str) -> Positioning:
    """The positioning without ``fragment``: a whole feature line, or an exact part of one
    (case-insensitive), which must occur in exactly one feature. The part and the
    separator next to it go; a line left empty goes."""
    low = fragment.strip().lower()
    hits = [k for k, f in enumerate(positioning.features) if low and low in f.text.lower()]
    if len(hits) != 1:
        raise InputError(f"{where}: mask {fragment!r} occurs in {len(hits)} feature lines of "
                         f"{positioning.source}. Fix: give an exact fragment of one line.")
    features = list(positioning.features)
    text = features[hits[0]].text
    start = text.lower().index(low)
    rest = (text[:start] + text[start + len(low):]).strip()
    rest = re.sub(r"\s*([,;])\s*(?=[,;)]|$)|^\s*[,;:]\s*|\(\s*[,;]?\s*\)", "", rest).strip(" ,;:")
    if rest:
        features[hits[0]] = Item(name=rest)
    else:
        del features[hits[0]]
    return replace(positioning, features=tuple(features))


def _readings(row: dict[str, Any], where: str) -> tuple[Reading, ...]:
    out = []
    for r in row.get("readers") or ():
        if not isinstance(r, dict) or r.get("label") not in LABELS:
            raise InputError(f"{where}: a reading without a valid label: {r!r}.")
        out.append(Reading(str(r.get("reader") or ""), r["label"], int(r.get("rule_step") or 0),
                           str(r.get("deciding_anchor") or "")))
    return tuple(out)


def load_corpus(directory: str | Path, texts: str | Path | None = None) -> Corpus:
    """Every product file and labelled request of a corpus directory, validated.

    ``texts``: a requests JSONL whose title, body and author are joined by id to a corpus
    that keeps labels only (``models/data/dev-labels``: the dev set's texts stay where the
    dev set lives, never copied into the repository)."""
    directory = Path(directory)
    joined = _texts(Path(texts)) if texts else None
    if not (directory / "requests.jsonl").is_file():
        raise InputError(f"{directory}: no requests.jsonl. Fix: pass --corpus with a corpus "
                         "directory (products/<slug>/<YYYY>.yml, requests.jsonl).")
    products: dict[str, Product] = {}
    kinds: dict[str, str] = {}
    as_of: dict[str, str] = {}
    for path in sorted(directory.glob("products/*/*.yml")):
        meta, positioning = read_product_file(path)
        slug = str(meta["slug"])
        if slug != path.parent.name:
            raise ConfigError(str(path), f"meta.slug {slug!r} differs from its folder.",
                              "make them the same.")
        key = f"{slug}/{path.stem}"
        products[key] = Product(slug, positioning)
        kinds[slug] = str(meta["kind"])
        as_of[key] = str(meta["as_of"])
    items: list[Labelled] = []
    seen: set[str] = set()
    for n, line in enumerate((directory / "requests.jsonl").read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{directory / 'requests.jsonl'} line {n}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({exc}).") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: not a JSON object. Fix: one request object a line.")
        if joined is not None:
            if str(row.get("id")) not in joined:
                raise InputError(f"{where}: request {row.get('id')!r} is not in {texts}. Fix: "
                                 "pass --texts with the requests file these labels were read "
                                 "from.")
            row = {**joined[str(row["id"])], **row}
        elif "title" not in row and "label" in row:
            raise InputError(f"{where}: title is missing. Fix: if this corpus keeps labels "
                             "only, pass --texts with the requests file that holds the texts.")
        items.append(_labelled(row, where, products, as_of, seen))
    split = directory / "split.json"
    heldout = tuple(json.loads(split.read_text("utf-8")).get("heldout") or ()) \
        if split.is_file() else ()
    unknown = set(heldout) - set(kinds)
    if unknown:
        raise InputError(f"{split}: held-out products {sorted(unknown)} have no product files.")
    return Corpus(products, items, heldout, kinds, as_of)


def _texts(path: Path) -> dict[str, dict[str, Any]]:
    """id -> {title, body, author} of a requests JSONL."""
    if not path.is_file():
        raise InputError(f"{path}: no such file. Fix: pass --texts with a requests JSONL file.")
    out: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}). Fix: save it "
                         "as UTF-8.") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path} line {n}: not valid JSON ({exc}).") from None
        if not isinstance(row, dict) or "id" not in row:
            raise InputError(f"{path} line {n}: a request needs an id.")
        out[str(row["id"])] = {k: row[k] for k in ("title", "body", "author") if k in row}
    return out


def _labelled(row: dict[str, Any], where: str, products: dict[str, Product],
              as_of: dict[str, str], seen: set[str]) -> Labelled:
    for key in ("id", "product", "title", "label", "product_file", "outcome"):
        if key not in row:
            raise InputError(f"{where}: {key} is missing.")
    if row["id"] in seen:
        raise InputError(f"{where}: id {row['id']!r} appears twice.")
    seen.add(row["id"])
    if row["label"] not in LABELS:
        raise InputError(f"{where}: label {row['label']!r} is not one of {LABELS}.")
    if row["outcome"] not in OUTCOMES:
        raise InputError(f"{where}: outcome {row['outcome']!r} is not one of {OUTCOMES}.")
    key = f"{row['product']}/{row['product_file']}"
    if key not in products:
        raise InputError(f"{where}: no product file {key}.yml. Fix: add it, or point "
                         "product_file at a year that has one.")
    if as_of[key] > str(row.get("created_at") or "9999"):
        raise InputError(f"{where}: its product file is as of {as_of[key]}, after the "
                         f"request ({row.get('created_at')}).")
    if row.get("mask"):
        mask_exact(products[key].positioning, str(row["mask"]), where)  # validates
    request = check_request(Request(
        id=str(row["id"]), title=str(row.get("title") or ""), body=str(row.get("body") or ""),
        author=str(row.get("author") or ""), customer=str(row.get("customer") or ""),
        created_at=str(row.get("created_at") or ""), url=str(row.get("url") or ""),
        label=row["label"]), where)
    return Labelled(request, str(row["product"]), row["label"], str(row.get("shipped_as") or ""),
                    outcome=row["outcome"], rule_step=int(row.get("rule_step") or 0),
                    product_file=key, readers=_readings(row, where),
                    mask=str(row.get("mask") or ""),
                    deciding_anchor=str(row.get("deciding_anchor") or ""))


def leaks(items: Iterable[Labelled], products: dict[str, Product],
          as_of: dict[str, str] | None = None) -> list[str]:
    """Requests scored against a product that already shows what they caused: should be
    empty.

    A corpus request's file was read at a commit before the request (``as_of`` <= its
    date: the loader refuses anything else), so it cannot show what the request caused;
    ``as_of`` (file key -> date) checks that again. A request scored against a product's
    one file leaks when its ``shipped_as`` is still in a feature line after masking.
    """
    out = []
    for item in items:
        if item.product_file:
            if as_of and as_of.get(item.product_file, "") > item.request.created_at:
                out.append(item.request.id)
            continue
        if not item.shipped_as.strip():
            continue
        positioning = positioning_for(products, item)
        text = " | ".join(f.text.lower() for f in positioning.features)
        if item.shipped_as.strip().lower() in text:
            out.append(item.request.id)
    return out


def named_in_file(corpus: Corpus) -> list[str]:
    """Corpus requests whose ``shipped_as`` is also a phrase of their (earlier) product file:
    an area that existed before the request (e.g. "Custom commands", which the request
    extended), not a leak; listed for review in the datasheet."""
    out = []
    for item in corpus.items:
        shipped = item.shipped_as.strip().lower()
        if len(shipped) >= 3 and any(shipped in f.text.lower() for f in
                                     positioning_for(corpus.products, item).features):
            out.append(item.request.id)
    return out


def positioning_for(products: dict[str, Product], item: Labelled) -> Positioning:
    """The positioning ``item`` is scored against: its as-of file, masked."""
    from .dataset import as_of_request

    positioning = products[item.product_file or item.product].positioning
    if item.mask:
        return mask_exact(positioning, item.mask, item.request.id)
    if item.product_file:  # an as-of file already predates what the request caused
        return positioning
    return as_of_request(positioning, item.shipped_as)


def cohen_kappa(a: Iterable[str], b: Iterable[str]) -> float:
    """Cohen's kappa of two readers' labels (1: full agreement, 0: chance)."""
    pairs = list(zip(a, b, strict=True))
    if not pairs:
        return 0.0
    observed = sum(x == y for x, y in pairs) / len(pairs)
    expected = sum((sum(x == c for x, _ in pairs) / len(pairs))
                   * (sum(y == c for _, y in pairs) / len(pairs)) for c in LABELS)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)
