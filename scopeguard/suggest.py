"""``scopeguard suggest non-goals``: non-goals proposed from what the maintainers declined.

Pure: the declined requests and their vectors in, suggestions out. Declined requests are
grouped by similarity (the audit's leader clusters); each group of at least ``min_size``
becomes a suggested non-goal named by its most distinctive words (class-based TF-IDF:
frequent in the group, rare in the other declined requests), with its member issues and
how many distinct people asked. A group already covered by a stated non-goal is left out.
``insert_commented`` writes accepted suggestions into the positioning file as
commented-out entries for the owner to enable.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audit import leader_clusters
from .backlog import customer_key, distinct_customers
from .engine import neighbours_above
from .history import Decided

STOPWORDS = frozenset("""
a about above add added adding after again all allow allowing also an and any are as at be
because been being but by can could do does doing done each else feature features for from
get had has have having how i if in into is it its just like make may me more most my need
needed new no not now of on one only option options or other our please possible request
requests should so some support supported such than that the their them then there these
they this to too use used user users using very want wanted way we were what when where
which while who why will with without would you your issue issues able currently still
also nice would-be thanks thank hi hello
""".split())


@dataclass(frozen=True)
class Suggestion:
    name: str
    description: str
    members: tuple[tuple[str, str, str], ...]  # (id, title, url)
    requesters: tuple[str, ...]
    words: tuple[str, ...]
    covered_by: str = ""  # a stated non-goal that already says it


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9+#.-]{2,}", text.lower())
            if w.strip(".-") not in STOPWORDS and not w.isdigit()]


def distinctive_words(groups: Sequence[Sequence[str]], k: int = 3) -> list[list[str]]:
    """The ``k`` words that set each group of texts apart (c-TF-IDF: a word's frequency in
    the group, times the log of how rare it is across groups), most distinctive first."""
    counts = [Counter(w for text in g for w in set(_words(text))) for g in groups]
    total = Counter()
    for c in counts:
        total.update(c)
    average = sum(sum(c.values()) for c in counts) / max(1, len(counts))
    out = []
    for c in counts:
        size = max(1, sum(c.values()))
        scored = sorted(c, key=lambda w: (-(c[w] / size) * math.log(1 + average / total[w]),
                                          w))
        out.append([w for w in scored if c[w] >= 2 or len(c) <= k][:k])
    return out


def suggest_non_goals(declined: Sequence[Decided], vectors: np.ndarray,
                      non_goal_vectors: np.ndarray | None = None,
                      non_goal_names: Sequence[str] = (), similar: float = 0.55,
                      covered: float = 0.6, min_size: int = 2) -> list[Suggestion]:
    """Suggested non-goals from ``declined`` requests (``vectors``: their normalised mean
    embeddings, aligned), largest group first."""
    if len(declined) < min_size:
        return []
    clusters = [c for c in leader_clusters(neighbours_above(vectors.astype(np.float32),
                                                            similar)) if len(c) >= min_size]
    texts = [[f"{declined[i].request.title} {declined[i].request.title} "
              f"{declined[i].request.body[:600]}" for i in c] for c in clusters]
    names = distinctive_words(texts)
    out = []
    for members, words in zip(clusters, names, strict=True):
        centre = vectors[members].mean(axis=0)
        centre = centre / (np.linalg.norm(centre) or 1.0)
        cover = ""
        if non_goal_vectors is not None and len(non_goal_vectors):
            sims = non_goal_vectors @ centre
            if float(sims.max()) >= covered:
                cover = non_goal_names[int(np.argmax(sims))]
        people = sorted(distinct_customers(declined[i].request.asker for i in members),
                        key=customer_key)
        leader = declined[members[0]].request
        name = " ".join(words).capitalize() if words else leader.title
        was = sum(declined[i].decision == "declined" for i in members)
        asked = (f"Declined {was} times" if was == len(members) else
                 f"Declined {was} times, and {len(members) - was} open request(s) scopeguard "
                 "labels one_off,")
        out.append(Suggestion(
            name=name,
            description=f"{asked} by {len(people) or 'unknown'} "
                        f"requester(s), e.g. {leader.id} '{leader.title}'.",
            members=tuple((declined[i].request.id, declined[i].request.title,
                           declined[i].request.url) for i in members),
            requesters=tuple(people), words=tuple(words), covered_by=cover))
    return sorted(out, key=lambda s: (-len(s.members), s.name))


# What must not reach a YAML comment raw: YAML's line breaks beside \n and \r (NEL, LS, PS:
# a requester's text would end the comment and become live settings), the characters YAML
# refuses in a stream, and lone surrogates (the file could not be written).
_UNSAFE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\ufeff\\ud800-\\udfff\\ufffe\\uffff]")


def _quoted(value: str) -> str:
    """``value`` as a YAML double-quoted string (JSON's syntax is YAML's) that stays on
    one line: every unsafe character escaped."""
    import json

    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def _plain(value: str) -> str:
    """``value`` inside a comment line: unsafe characters become spaces."""
    return _UNSAFE.sub(" ", value)


def not_written(text: str, suggestions: Sequence[Suggestion]) -> list[Suggestion]:
    """The ``suggestions`` an earlier ``--write`` did not already put into ``text``
    (commented out, or since uncommented: the same name line)."""
    return [s for s in suggestions
            if not re.search(r"^[ \t]*(#[ \t]*)?- name: " + re.escape(_quoted(s.name)) +
                             r"[ \t]*$", text, re.M)]


def insert_commented(text: str, suggestions: Sequence[Suggestion], when: str) -> str:
    """The positioning file ``text`` with ``suggestions`` as commented-out entries under
    ``non_goals:`` (created at the end when absent): uncomment one to enable it. Those
    already in the file (an earlier ``--write``) are not added again."""
    block = []
    for s in not_written(text, suggestions):
        ids = ", ".join(_plain(m[0]) for m in s.members[:8])
        block += [f"  # Suggested by scopeguard suggest non-goals ({when}): asked "
                  f"{len(s.members)} times by {len(s.requesters)} requester(s): {ids}.",
                  f"  # - name: {_quoted(s.name)}",
                  f"  #   description: {_quoted(s.description)}",
                  "  #   instead: \"\"  # where to point people instead"]
    lines = text.rstrip("\n").split("\n")
    for i, line in enumerate(lines):
        if re.match(r"^non_goals:\s*(#.*)?$", line):
            return "\n".join(lines[:i + 1] + block + lines[i + 1:]) + "\n"
        if re.match(r"^non_goals:\s*\[\]\s*(#.*)?$", line):
            return "\n".join(lines[:i] + ["non_goals:"] + block + lines[i + 1:]) + "\n"
    return "\n".join([*lines, "", "non_goals:", *block]) + "\n"
