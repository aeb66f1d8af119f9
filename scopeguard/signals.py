"""Text signals that embeddings miss: custom-work language and the input class.

Pure functions over the cleaned text. Each signal keeps the words that triggered
it, so a verdict can quote its evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INPUT_CLASSES = ("fault_correction", "necessity", "market_driven", "opportunistic",
                 "responsiveness")


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    strength: str  # "strong" or "weak"
    evidence: str  # the words that matched


_W = r"(?<![\w-])"  # word start that also refuses '-' (flags like --contract)

# Custom work: one customer's situation. Strong signals name the customer or the deal.
_CUSTOM_PATTERNS: list[tuple[str, str, str]] = [
    ("named customer", "strong",
     _W + r"(?:our|a|one of our|my) (?:client|customer|account|tenant)s? "
          r"(?:called|named|,)\s*[A-Z][\w&.-]+"),
    ("named customer", "strong",
     # at most six words before the suffix: a run of capitalised words tried from each
     # of its words to its end was quadratic ('Acme ' 20,000 times took 20 s)
     r"\b[A-Z][\w&-]{1,40}(?: [A-Z][\w&-]{1,40}){0,5} "
     r"(?:Inc|Ltd|LLC|GmbH|Corp|Corporation|S\.A|AG|plc|BV)\b\.?"),
    ("in-house system", "strong", _W + r"(?:our|their) (?:own )?(?:in-house|in house)\b"),
    ("in-house system", "strong",
     _W + r"(?:in-house|in house|home-grown|homegrown|proprietary|bespoke|legacy) "
          r"(?:\w+ ){0,2}(?:system|tool|platform|software|app|application|erp|crm|database|"
          r"service|api|format|server|portal)"),
    ("in-house system", "strong",
     _W + r"our (?:own |internal |company'?s? |corporate )"
          r"(?:\w+ ){0,2}(?:system|tool|platform|software|erp|crm|database|api|sso|portal)"),
    ("contract or deal", "strong",
     _W + r"(?:contract|renewal|purchase order|procurement|rfp|tender|sla|statement of work|"
          r"invoice us|paid (?:custom )?work|we(?:'ll| will) pay|budget for this)\b"),
    ("contract or deal", "strong",
     _W + r"(?:los(?:e|ing) (?:the |a |this )?(?:deal|customer|client|account|sale)s?|"
          r"(?:close|closing|win|sign) (?:the |this |a )?(?:deal|contract)|"
          r"deal[- ]breaker|blocker for (?:the |a |our )?(?:deal|sale|client|customer)|"
          r"won'?t (?:buy|sign|renew)|(?:can'?t|cannot) sell)\b"),
    ("only for us", "strong",
     _W + r"(?:only (?:for|at) (?:us|our \w+)|just for (?:us|our \w+)|for our (?:board|ceo|"
          r"franchise|head office|auditors?))\b"),
    ("our branding", "weak", _W + r"our (?:logo|brand|branding|colou?rs|house style)\b"),
    ("personal workflow", "weak",
     _W + r"(?:my|our) (?:specific |particular |unusual |own )?(?:use[- ]case|workflow|setup|"
          r"set-up|process|environment|team's process)\b"),
    ("personal workflow", "weak", _W + r"(?:for me|in my case|i personally|personally,? i)\b"),
]

# The five classes of product input. Patterns are scored; the best-scoring class wins and
# "responsiveness" (a customer asking) is the default for feature requests.
_INPUT_PATTERNS: dict[str, list[str]] = {
    "fault_correction": [
        r"\bbugs?\b", r"\bcrash(?:es|ed|ing)?\b", r"\bregression\b", r"\bbroken\b",
        r"\b(?:does ?n[o']t|doesnt|no longer|stopped) work", r"\bpanic(?:s|ked)?\b",
        r"\bexception\b", r"\bstack ?trace\b", r"\bfails? to\b", r"\bwrong (?:result|output)",
        r"\berror (?:message|when|on)\b", r"\bsupport tickets?\b", r"\bconfus(?:ing|ed|es)\b",
    ],
    "necessity": [
        r"\bregulat\w*", r"\bcomplian\w*", r"\bgdpr\b", r"\bhipaa\b", r"\bsox\b", r"\bpci\b",
        r"\blegal(?:ly)?\b", r"\bthe law\b", r"\baccessib\w*", r"\bwcag\b",
        r"\bsecurity\b", r"\bvulnerab\w*", r"\bcve-\d+", r"\bdeprecat\w*", r"\bend[- ]of[- ]life\b",
        r"\bmandatory\b", r"\brequired by\b", r"\baudit (?:trail|log)", r"\bdata protection\b",
        r"\bretention\b",
    ],
    "market_driven": [
        r"\bcompetitors?\b", r"\bthe market\b", r"\bindustry\b", r"\bmost (?:users|people)\b",
        r"\bevery (?:other )?(?:tool|app|product)\b", r"\bother (?:tools|apps|products)\b",
        r"\bstandard (?:feature|practice)\b", r"\btrend\w*", r"\busers expect\b",
        r"\bde facto\b", r"\bwould attract\b", r"\bgrowing\b",
    ],
    "opportunistic": [
        r"\b(?:the|a|this|that|big|new|our|lost) deals?\b(?! with)", r"\bprospects?\b",
        r"\brfp\b", r"\btender\b", r"\bsales team\b",
        r"\bpilot\b", r"\bsign(?:ing)? (?:the|a) contract\b", r"\bwon'?t (?:buy|sign)\b",
        r"\b(?:can'?t|cannot) sell\b", r"\blos(?:e|ing) (?:the )?(?:deal|sale|customer)s?\b",
        r"\bnew (?:customer|client|account)s?\b", r"\brenewal\b",
    ],
    "responsiveness": [
        r"\bwould be (?:nice|great|cool|useful|awesome|handy)\b", r"\bi(?:'d| would) (?:like|love)\b",
        r"\bplease add\b", r"\bfeature request\b", r"\bcould you\b", r"\bis (?:it|there a way) possible\b",
        r"\bour (?:users|staff|team|clients|customers) (?:ask|want|need)", r"\bfeedback\b",
        r"\bwish\b",
    ],
}
_FIELD = re.compile(r"^\s*[\w ]{1,30}:\s*\S[^.!?]{0,60}$")
_INPUT_RE = {k: [re.compile(p, re.I) for p in v] for k, v in _INPUT_PATTERNS.items()}
_CUSTOM_RE = [(name, strength, re.compile(p, re.I if name != "named customer" else 0))
              for name, strength, p in _CUSTOM_PATTERNS]


def custom_signals(text: str, customer: str = "") -> list[Signal]:
    """Custom-work signals in ``text``; ``customer`` named in the text is one too."""
    found: list[Signal] = []
    seen: set[tuple[str, str]] = set()
    for name, strength, pattern in _CUSTOM_RE:
        for match in pattern.finditer(text):
            evidence = match.group(0).strip()
            if (name, evidence.lower()) not in seen:
                seen.add((name, evidence.lower()))
                found.append(Signal(name, strength, evidence))
    if customer and " " in customer.strip():
        # The customer's own name in the prose ("Riverside Vets needs...") is custom
        # language; in a "Clinic: Riverside Vets" form field it only says who filed it.
        named = re.compile(r"(?<!\w)" + re.escape(customer.strip()) + r"(?!\w)", re.I)
        prose = [line for line in text.splitlines() if not _FIELD.match(line)]
        if any(named.search(line) for line in prose):
            found.append(Signal("named customer", "strong", customer.strip()))
    return found


def input_class(text: str) -> tuple[str, dict[str, int]]:
    """The input class of the five, and the pattern counts that decided it."""
    counts = {k: sum(1 for p in pats if p.search(text)) for k, pats in _INPUT_RE.items()}
    # Opportunistic and necessity asks are rarer and more decisive than a polite "would be
    # nice", so they win ties; fault correction needs more than one hint (an "error
    # message" alone is not a bug report).
    order = ["opportunistic", "necessity", "fault_correction", "market_driven"]
    minimum = {"opportunistic": 1, "necessity": 1, "fault_correction": 2, "market_driven": 1}
    best = max(order, key=lambda k: (counts[k] >= minimum[k], counts[k], -order.index(k)))
    if counts[best] >= minimum[best]:
        return best, counts
    return "responsiveness", counts


_QUESTION = re.compile(r"^[^\w\n]*(?:is (?:it|there|that)|are there|can (?:i|you|we|it)|"
                       r"could (?:i|you|we|it)|how (?:can|do|to)|would it be possible|"
                       r"does \w+ (?:support|have))\b",
                       re.I | re.M)


def is_question(text: str) -> bool:
    """Asked as a question ("Is it possible to...?"): often answered by an existing way."""
    return bool(_QUESTION.search(text[:400]))
