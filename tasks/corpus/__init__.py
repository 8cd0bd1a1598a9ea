"""Corpus rules: decisions that need every shard (tasks/corpus/base.py has the protocol).

The registry maps recipe keys to modules, one line per rule; a recipe may also name a rule by
import path (``package.module`` or ``package.module:attr``) under ``stages.filter.corpus``.
"""

from __future__ import annotations

from typing import Any

from tasks.stage import resolve

# recipe key -> module path. One line per rule.
REGISTRY: dict[str, str] = {
    "exact_dedup": "tasks.corpus.exact",
    "url_dedup": "tasks.corpus.url",
    "minhash_dedup": "tasks.corpus.minhash",
    "top_k": "tasks.corpus.top_k",
    "dsir": "tasks.select.dsir",
    "quality_buckets": "tasks.select.buckets",
}


def get_rule(name: str) -> Any:
    return resolve(REGISTRY, name, "corpus rule")
