"""The noise lab: controlled noise injected into documents, marking what it touched.

Follows "Understanding the Effect of Noise in LLM Training Data": *static* noise is local
(character typos, dropped words, boilerplate lines); *dynamic* noise propagates (an entity
swapped for another and kept consistently through the rest of the document, so the error is
self-consistent and harder to spot). A ``fraction`` of documents is noised, each at an
``intensity`` (per-word / per-line probability); the choice is a function of the document id and
the seed, so the same corpus always gets the same noise.

Used to prove the statistics (a noised recipe must compare worse than a clean one) and to
measure filters (recall on noised documents, false positives on clean ones).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash

KINDS = ("typos", "word_drop", "boilerplate", "entity_swap")
BOILERPLATE = (
    "Click here to subscribe to our newsletter!",
    "Cookie policy | Terms of use | Privacy policy",
    "Share on Facebook Share on Twitter",
    "Home > Articles > Archive",
    "Copyright © All rights reserved.",
    "Log in or register to post comments",
)
_ENTITY = re.compile(r"\b[A-Z][a-z]{3,}\b")


def _rng(seed: int, doc_id: str, salt: str = "") -> random.Random:
    return random.Random(xxhash.xxh64_intdigest(f"{seed}\x1f{salt}\x1f{doc_id}".encode()))


def chosen(doc_id: str, fraction: float, seed: int) -> bool:
    return _rng(seed, doc_id, "pick").random() < fraction


def typos(text: str, p: float, rng: random.Random) -> str:
    words = text.split(" ")
    for i, w in enumerate(words):
        if len(w) > 3 and rng.random() < p:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]  # swap two neighbours
    return " ".join(words)


def word_drop(text: str, p: float, rng: random.Random) -> str:
    lines = []
    for line in text.split("\n"):
        lines.append(" ".join(w for w in line.split(" ") if not (w and rng.random() < p)))
    return "\n".join(lines)


def boilerplate(text: str, p: float, rng: random.Random) -> str:
    lines = text.split("\n")
    n = max(1, round(p * len(lines)))
    for _ in range(n):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(BOILERPLATE))
    return "\n".join(lines)


def entity_swap(text: str, pool: Sequence[str], rng: random.Random) -> str:
    """Replace one entity by another from every mention after its first: a consistent error."""
    found = [m.group() for m in _ENTITY.finditer(text)]
    ents = sorted(set(found))
    others = [e for e in pool if e not in ents]
    # an entity mentioned again is the one whose error propagates
    repeated = sorted({e for e in ents if found.count(e) > 1}) or ents
    if not ents or not others:
        return text
    old, new = rng.choice(repeated), rng.choice(others)
    first = text.find(old) + len(old)
    return text[:first] + re.sub(rf"\b{re.escape(old)}\b", new, text[first:])


def inject(ids: Sequence[str], texts: Sequence[str], fraction: float, intensity: float,
           kinds: Sequence[str] = KINDS, seed: int = 0) -> tuple[list[str], list[str | None]]:
    """Noised texts, and per document the kinds applied (None = left clean)."""
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown noise kind(s) {bad}; known: {KINDS}")
    pool = sorted({m.group() for t in texts for m in _ENTITY.finditer(t)})
    out, marks = [], []
    for doc_id, text in zip(ids, texts, strict=True):
        if not chosen(doc_id, fraction, seed):
            out.append(text)
            marks.append(None)
            continue
        rng = _rng(seed, doc_id)
        for kind in kinds:
            if kind == "typos":
                text = typos(text, intensity, rng)
            elif kind == "word_drop":
                text = word_drop(text, intensity, rng)
            elif kind == "boilerplate":
                text = boilerplate(text, intensity, rng)
            else:
                text = entity_swap(text, pool, rng)
        out.append(text)
        marks.append(",".join(kinds))
    return out, marks


# ----------------------------------------------------------------------------- filters
def rule_failures(texts: Sequence[str], langs: Sequence[str | None],
                  filters: dict[str, Any]) -> dict[str, np.ndarray]:
    """For each rule of each filter (name -> Config), the documents that fail it when that
    filter alone scores them (a null decision — rule does not apply — is a pass)."""
    import pyarrow as pa

    from tasks.filters.base import get_filter

    table = pa.table({"text": pa.array(list(texts), pa.large_string()),
                      "lang": pa.array(list(langs), pa.string())})
    out: dict[str, np.ndarray] = {}
    for name, config in filters.items():
        module = get_filter(name)
        for rule, arr in module.rules(module.score(table, config), config).items():
            out[rule] = np.array([v is True for v in arr.to_pylist()], dtype=bool)
    return out


def catch_rates(noised: np.ndarray, fails_noised: dict[str, np.ndarray],
                fails_clean: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per rule, on a corpus where ``noised`` marks the documents the lab touched:

    - recall: share of noised documents the rule drops;
    - caught: share of noised documents the rule drops whose clean original it keeps (what the
      noise itself made it catch);
    - false_pos: share of clean (untouched) documents it drops.
    ``fails_noised`` / ``fails_clean``: rule -> fails, on the noised corpus and on the same
    documents before noise. A last row, ``any``, is the union of the rules."""
    noised = np.asarray(noised, dtype=bool)
    clean = ~noised
    rules = list(fails_noised)
    rows = []
    union_n = np.zeros_like(noised)
    union_c = np.zeros_like(noised)
    for rule in [*rules, "any"]:
        if rule == "any":
            fn, fc = union_n, union_c
        else:
            fn, fc = fails_noised[rule], fails_clean[rule]
            union_n, union_c = union_n | fn, union_c | fc
        kept_before = noised & ~fc
        rows.append({
            "rule": rule,
            "recall": float((fn & noised).sum() / max(1, noised.sum())),
            "caught": float((fn & kept_before).sum() / max(1, kept_before.sum())),
            "false_pos": float((fn & clean).sum() / max(1, clean.sum())),
            "noised": int(noised.sum()), "clean": int(clean.sum()),
        })
    return rows
