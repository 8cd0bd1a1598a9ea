"""Multiple-choice tasks built from held-out text that a small model can move on.

Built only from the held-out split (documents chosen by a hash of their id, never trained on),
deterministically: the same documents always give the same items, and an item's id is its
document's id, so two runs that both hold a document out score the same item (paired).

- ``next_sentence``: the first sentences of a document as context; choose its true next sentence
  among it and 3 sentences from other held-out documents (of the same source when possible).
- ``final_word``: a sentence of at least 8 words without its last word; choose the true last word
  among it and 3 words of similar length taken from other held-out documents.
- ``cloze``: the document up to a mention of a frequent word or entity (a word of 4+ letters
  found in at least ``CLOZE_MIN_DF`` held-out documents of its source and language); choose the
  mention among it and 3 other frequent words of the same kind (capitalised or not), of similar
  length. A mention whose word already appeared earlier in the document is preferred: as in
  LAMBADA, the context itself can give the answer away.
Random-choice accuracy is 1/4 for all; DCLM-style centred accuracy rescales it to 0.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import Any

import xxhash

TASKS = ("next_sentence", "final_word", "cloze")
N_CHOICES = 4
MAX_CONTEXT_CHARS = 600
_SENT = re.compile(r"(?<=[.!?。！？])\s+")
_WORD = re.compile(r"^\w{4,}$")
_CLOZE_WORD = re.compile(r"(?<!\w)[^\W\d_]{4,}(?!\w)")  # letters only, no digits or _
CLOZE_MIN_DF = 3  # documents a word must appear in to count as frequent
CLOZE_MIN_CONTEXT = 60  # characters of document before the blank


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text.replace("\n", " ")) if len(s.strip()) > 1]


def _rng(*parts: str) -> random.Random:
    return random.Random(xxhash.xxh64_intdigest("\x1f".join(parts).encode()))


def _options(gold: str, pool: list[str], rng: random.Random) -> tuple[list[str], int] | None:
    others = sorted({p for p in pool if p != gold})
    if len(others) < N_CHOICES - 1:
        return None
    choices = [gold, *rng.sample(others, N_CHOICES - 1)]
    rng.shuffle(choices)
    return choices, choices.index(gold)


def build(task: str, docs: list[dict[str, Any]], max_items: int, seed: int = 0
          ) -> list[dict[str, Any]]:
    """docs: held-out {id, text, source}. Returns {id, source, context, choices, gold}."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    docs = sorted(docs, key=lambda d: d["id"])
    if task == "cloze":
        return _cloze(docs, max_items, seed)
    sents = {d["id"]: sentences(d["text"]) for d in docs}
    # distractors come from documents of the same source and language: a choice in another
    # language would give the answer away
    pool: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for d in docs:
        ss = sents[d["id"]]
        key = (d["source"], d.get("lang"))
        if task == "next_sentence":
            pool[key].extend(s for s in ss[1:] if 20 <= len(s) <= 300)
        else:
            pool[key].extend(w for s in ss for w in s.split()[-1:]
                             if _WORD.match(w.strip(".!?。！？")))
    items = []
    for d in docs:
        rng = _rng(task, str(seed), d["id"])
        ss = sents[d["id"]]
        own_pool = pool[(d["source"], d.get("lang"))]
        if task == "next_sentence":
            if len(ss) < 2:
                continue
            k = rng.randint(1, len(ss) - 1)
            gold = ss[k]
            if not 20 <= len(gold) <= 300:
                continue
            own = set(ss)
            opts = _options(gold, [x for x in own_pool if x not in own], rng)
            context = " ".join(ss[:k])[-MAX_CONTEXT_CHARS:]
            choices = [" " + c for c in opts[0]] if opts else None
        else:
            cands = [s for s in ss if len(s.split()) >= 8]
            if not cands:
                continue
            s = cands[rng.randrange(len(cands))]
            words = s.split()
            gold = words[-1].strip(".!?。！？")
            if not _WORD.match(gold):
                continue
            near = [w.strip(".!?。！？") for w in own_pool]
            near = [w for w in near if abs(len(w) - len(gold)) <= 2] or near
            opts = _options(gold, near, rng)
            context = " ".join(words[:-1])[-MAX_CONTEXT_CHARS:]
            choices = [" " + c for c in opts[0]] if opts else None
        if opts is None or choices is None:
            continue
        items.append({"id": d["id"], "source": d["source"], "context": context,
                      "choices": choices, "gold": opts[1]})
        if len(items) >= max_items:
            break
    return items


def _frequent_words(docs: list[dict[str, Any]]) -> dict[tuple[str, str | None], list[str]]:
    """Per (source, language): the words found in at least CLOZE_MIN_DF documents, sorted."""
    df: dict[tuple[str, str | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for d in docs:
        counts = df[(d["source"], d.get("lang"))]
        for w in set(_CLOZE_WORD.findall(d["text"])):
            counts[w] += 1
    return {k: sorted(w for w, n in c.items() if n >= CLOZE_MIN_DF) for k, c in df.items()}


def _cloze(docs: list[dict[str, Any]], max_items: int, seed: int) -> list[dict[str, Any]]:
    frequent = _frequent_words(docs)
    vocab = {k: set(v) for k, v in frequent.items()}
    items = []
    for d in docs:
        key = (d["source"], d.get("lang"))
        text = d["text"]
        mentions, seen, first = [], [], set()
        for m in _CLOZE_WORD.finditer(text):
            w, i = m.group(), m.start()
            # after a space, so the choice " word" is how the text itself continues
            if w in vocab[key] and i >= CLOZE_MIN_CONTEXT and text[i - 1].isspace():
                mentions.append((i, w))
                if w in first:  # seen earlier in the document: the context can give it away
                    seen.append((i, w))
            first.add(w)
        cands = seen or mentions
        if not cands:
            continue
        rng = _rng("cloze", str(seed), d["id"])
        start, gold = cands[rng.randrange(len(cands))]
        kind = [w for w in frequent[key] if w[:1].isupper() == gold[:1].isupper()]
        near = [w for w in kind if abs(len(w) - len(gold)) <= 2]
        opts = _options(gold, near if len(near) >= N_CHOICES else kind, rng)
        if opts is None:
            continue
        context = text[:start].rstrip()[-MAX_CONTEXT_CHARS:]
        items.append({"id": d["id"], "source": d["source"], "context": context,
                      "choices": [" " + c for c in opts[0]], "gold": opts[1]})
        if len(items) >= max_items:
            break
    return items


def centred(acc: float, n_choices: int = N_CHOICES) -> float:
    """(acc - random) / (1 - random): 0 at chance, 1 when perfect (DCLM's CORE)."""
    r = 1.0 / n_choices
    return (acc - r) / (1 - r)
