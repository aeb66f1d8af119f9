"""``scopeguard check``: findings about a positioning file's quality.

A positioning that would not survive a sales meeting makes every verdict weaker:
vague target customers ("small and medium enterprises"), vague values ("improve
efficiency"), a missing alternative or uniqueness, features that say the same
thing twice, non-goals that contradict a feature. Pure: similarities come from a
function the caller passes (the embedder, or the lexical fallback below).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .markup import plain
from .positioning import Positioning

Similarity = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    key: str
    message: str
    fix: str

    def format(self, source: str) -> str:
        """One line for the terminal: what the file says is repeated without control
        characters (an escape sequence in a feature's name would reach the terminal)."""
        return plain(f"{source}: {self.level}: {self.key}: {self.message} Fix: {self.fix}")


VAGUE_CUSTOMERS = [
    r"small and medium(?:[- ]sized)? (?:enterprises|businesses|companies)", r"\bsmes?\b",
    r"\bsmbs?\b", r"\beveryone\b", r"\beverybody\b", r"\banyone\b", r"\ball (?:businesses|companies|"
    r"organi[sz]ations|teams|users|people|industries)\b", r"\bbusinesses of all sizes\b",
    r"\bcompanies of all sizes\b", r"\bany (?:business|company|organi[sz]ation|team)\b",
    r"\benterprises\b", r"\bmodern (?:teams|businesses)\b",
]
VAGUE_VALUES = [
    r"\bimprov\w* (?:the )?(?:management|efficiency|productivity|performance|processes|"
    r"workflows?|collaboration|communication|operations)\b",
    r"\bincreas\w* (?:efficiency|productivity)\b", r"\bboost\w* productivity\b",
    r"\bstreamlin\w*", r"\boptimi[sz]\w* (?:your |the )?(?:business|processes|operations|workflows?)",
    r"\bempower\w*", r"\bleverag\w*", r"\bsynerg\w*", r"\bbest[- ]in[- ]class\b",
    r"\bworld[- ]class\b", r"\bseamless\w*", r"\ball[- ]in[- ]one\b", r"\bdigital transformation\b",
    r"\bnext[- ]generation\b", r"\bcutting[- ]edge\b", r"\bstate[- ]of[- ]the[- ]art\b",
    r"\bmanagement level\b", r"\bbetter (?:management|results|outcomes)\b",
]
_VAGUE_C = [re.compile(p, re.I) for p in VAGUE_CUSTOMERS]
_VAGUE_V = [re.compile(p, re.I) for p in VAGUE_VALUES]

DUPLICATE_FEATURES = 0.85
CONTRADICTION = 0.75
# A "vision" non-goal refuses features in general ("major new features", "not every
# feature belongs in core", "out-of-scope functionality"): a policy, not a kind of ask.
# Measured on the corpus's 641 non-goals, cosine to the features does not single these
# out (a product with one vocabulary makes every non-goal resemble every feature), so
# the words do.
_VISION = re.compile(
    r"\b(?:every|any|(?<!not )all|most|new|major|big|additional|extra|more|other|non-essential|"
    r"nonessential|unnecessary|niche)\s+(?:new\s+|major\s+)?(?:features?|functionality|"
    r"functionalities|capabilit(?:y|ies))\b|\bfeatures?\s+(?:belongs?\s+)?in(?:to)?\s+"
    r"(?:the\s+)?core\b|^\s*out[- ]of[- ]scope(?:\s+(?:functionality|features?|requests?))?"
    r"\s*[.:]", re.I)

# What an empty positioning field costs the verdicts, and what to write instead.
EMPTY_BUYS = {
    "target_customer": "scopeguard cannot tell a request from another customer (another "
                       "product's job, rule step 3) from one of yours.",
    "need": "requests are not judged against the problem the product solves, so a request "
            "for a neighbouring job reads as core.",
    "main_value": "core requests are those that extend the main value; without it only the "
                  "feature list says what core is.",
}
EMPTY_FIX = {
    "target_customer": "who exactly uses or buys it, in what situation (role, size, context)",
    "need": "the problem they have today, in their words",
    "main_value": "what concretely changes for them, with a number if you can",
}


def _vague(text: str, patterns: list[re.Pattern[str]]) -> list[str]:
    """The vague phrases in ``text``; one inside another found ('enterprises' inside
    'small and medium enterprises') is said once, as the longer."""
    spans = [m.span() for p in patterns for m in [p.search(text)] if m]
    return [text[a:b] for a, b in spans
            if not any(c <= a and b <= d and (c, d) != (a, b) for c, d in spans)]


def lexical_similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Jaccard similarity of word sets: the fallback when no model is loaded."""
    def words(t: str) -> set[str]:
        return {w for w in re.findall(r"[a-z0-9]+", t.lower()) if len(w) > 2}
    wa, wb = [words(t) for t in a], [words(t) for t in b]
    vocabulary = {w: k for k, w in enumerate(sorted(set().union(*wa, *wb)))}

    def rows(sets: list[set[str]]) -> np.ndarray:
        matrix = np.zeros((len(sets), len(vocabulary)), dtype=np.float32)
        for i, found in enumerate(sets):
            matrix[i, [vocabulary[w] for w in found]] = 1.0
        return matrix

    # |x & y| for every pair at once (a pair loop took 74 s for 4,000 features)
    ma, mb = rows(wa), rows(wb)
    shared = ma @ mb.T
    union = ma.sum(1)[:, None] + mb.sum(1)[None, :] - shared
    out = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
    return out.astype(np.float32)


def _placeholders() -> re.Pattern[str]:
    """What `scopeguard init` writes for the owner to replace, exactly: the template's
    `<the precise customer you build for>`... and its product `MyProduct` (a feature may
    name an HTML tag), and the draft's `TODO` fields and `For TODO, use ...` category (a
    product may be about TODO comments). Classifying against them compares requests with
    template text."""
    from .template import TEMPLATE

    marks = sorted(set(re.findall(r"<[^<>\n]+>", TEMPLATE)), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, marks))
                      + r"|^\s*(?:TODO|MyProduct)\s*$|^For TODO, use ")


_PLACEHOLDER = _placeholders()


def _texts(p: Positioning) -> list[tuple[str, str]]:
    """Every text of the file the owner writes, with the key a finding names."""
    out = [(key, getattr(p, key)) for key in ("product", "category", "target_customer", "need",
                                                "main_value", "alternative", "uniqueness",
                                                "ideal_customer")]
    out += [(f"statements[{i}]", s) for i, s in enumerate(p.statements)]
    for name, items in (("features", p.features), ("non_goals", p.non_goals)):
        for i, item in enumerate(items):
            out += [(f"{name}[{i}].{part}", getattr(item, part))
                    for part in ("name", "description", "instead")]
    return [(k, v) for k, v in out if isinstance(v, str) and v]


def lint(p: Positioning, similarity: Similarity | None = None,
         duplicate_at: float = DUPLICATE_FEATURES,
         contradiction_at: float = CONTRADICTION) -> list[Finding]:
    """Findings about ``p``, errors first. ``similarity`` defaults to the lexical one,
    whose scale is lower: pass thresholds that suit the function you pass."""
    if similarity is None:
        similarity = lexical_similarity
        duplicate_at, contradiction_at = 0.6, 0.6
    found: list[Finding] = []
    add = found.append

    for key, text in _texts(p):
        if _PLACEHOLDER.search(text):
            add(Finding("error", key, f"'{text[:80]}' is still a placeholder of the template "
                        "or the draft.", "replace it with your product's own words (or "
                        "delete the entry)."))
    if not p.alternative:
        add(Finding("error", "alternative", "is missing: what do customers use today instead?",
                    "name the alternative the product replaces, e.g. 'the phone and a paper "
                    "diary'."))
    if not p.uniqueness:
        add(Finding("error", "uniqueness", "is missing: why would anyone pick this product "
                    "over the alternative?", "state what only this product does."))
    for key, text in (("target_customer", p.target_customer), ("need", p.need),
                      ("main_value", p.main_value)):
        if not text:
            add(Finding("warning", key, f"is empty: {EMPTY_BUYS[key]}",
                        f"write {EMPTY_FIX[key]}."))
    for key, text in (("target_customer", p.target_customer),):
        for word in _vague(text, _VAGUE_C):
            add(Finding("warning", key, f"vague target customer '{word}'.",
                        "describe the customer precisely: who, what size, what situation."))
        if text and len(text.split()) < 4:
            add(Finding("warning", key, f"'{text}' is too short to benchmark requests against.",
                        "say who the customer is and what situation they are in."))
    for key, text in (("main_value", p.main_value), ("need", p.need),
                      ("uniqueness", p.uniqueness), ("category", p.category)):
        for word in _vague(text, _VAGUE_V):
            add(Finding("warning", key, f"vague wording '{word}'.",
                        "say what concretely changes for the customer, with a number if "
                        "you can."))
    if not re.match(r"^\s*for\b.+\buse\b", p.category, re.I | re.S):
        add(Finding("warning", "category", f"'{p.category}' is not of the form "
                    "'For <need>, use <product>'.",
                    f"write e.g. 'For <what the customer does>, use {p.product}'."))
    elif p.product.lower() not in p.category.lower():
        add(Finding("warning", "category", "does not name the product.",
                    f"end it with 'use {p.product}'."))

    names = [f.name.lower() for f in p.features]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen or seen.add(name):
            add(Finding("error", f"features[{i}]", f"duplicates the name '{p.features[i].name}'.",
                        "merge the two entries or rename one."))
    texts = [f.text for f in p.features]
    if len(texts) > 1:
        sims = similarity(texts, texts)
        close = np.triu(np.asarray(sims) >= duplicate_at, k=1)  # each pair once, i < j
        for i, j in zip(*np.nonzero(close), strict=True):  # in the order of a pair loop
            if names[i] != names[j]:
                add(Finding("warning", f"features[{j}]",
                            f"'{p.features[j].name}' says much the same as "
                            f"'{p.features[i].name}' (similarity {sims[i, j]:.2f}).",
                            "merge them, or make each description say what is different."))
    if p.non_goals:
        sims = similarity([n.text for n in p.non_goals], texts)
        for i, n in enumerate(p.non_goals):
            if _VISION.search(f"{n.name}. {n.description}"):
                add(Finding("warning", f"non_goals[{i}]",
                            f"'{n.name}' refuses features in general, not a kind of request: "
                            "a policy, which resembles every request and so would decline "
                            "them all.", "name the concrete asks it refuses (and where to "
                            "point people instead), or move the policy to statements."))
            j = int(np.argmax(sims[i]))
            if sims[i, j] >= contradiction_at or n.name.lower() in names:
                add(Finding("error", f"non_goals[{i}]",
                            f"'{n.name}' contradicts the feature '{p.features[j].name}' "
                            f"(similarity {sims[i, j]:.2f}).",
                            "remove one, or narrow the non-goal to what the product will "
                            "really not do."))
    else:
        add(Finding("warning", "non_goals", "none listed: scopeguard cannot point to what the "
                    "product will not do.", "list at least the asks you keep declining."))
    if len(p.features) < 3:
        add(Finding("warning", "features", f"only {len(p.features)} listed.",
                    "list what the product does today, one entry per capability."))
    if not p.ideal_customer:
        add(Finding("warning", "ideal_customer", "no ideal customer profile.",
                    "describe your best current customer, to benchmark requests against."))
    return sorted(found, key=lambda f: f.level != "error")
