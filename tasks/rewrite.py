"""Rewrite: turn documents into better training text with a model (WRAP, REWIRE, Nemotron-CC).

The stage's seam: a ``Rewriter`` maps a batch of texts to rewritten texts (``None`` = could not
rewrite: the document is rejected with a reason, never silently dropped). Backends (an
OpenAI-compatible HTTP server, local models on Ray actors) implement the protocol; ``identity``
copies text and exercises the per-shard path. With ``rewrite: null`` in a recipe the stage is a
pass-through that re-uses its input shards without copying them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.schema import with_reject
from tasks.store import write_parquet


class Rewriter(Protocol):
    name: str

    def rewrite(self, ids: list[str], texts: list[str]) -> list[str | None]: ...

    def annotations(self) -> dict[str, pa.Array]:
        """Extra columns for the last batch (e.g. which documents were noised)."""
        ...


class IdentityRewriter:
    name = "identity"

    def rewrite(self, ids: list[str], texts: list[str]) -> list[str | None]:
        return list(texts)

    def annotations(self) -> dict[str, pa.Array]:
        return {}


class NoiseRewriter:
    """The noise lab as a rewriting backend: see tasks/noise.py."""

    name = "noise"

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self._marks: list[str | None] = []

    def rewrite(self, ids: list[str], texts: list[str]) -> list[str | None]:
        from tasks.noise import inject

        out, self._marks = inject(ids, texts, self.cfg["fraction"], self.cfg["intensity"],
                                  self.cfg["kinds"], self.cfg["seed"])
        return list(out)

    def annotations(self) -> dict[str, pa.Array]:
        return {"noise": pa.array(self._marks, pa.string())}


def get_rewriter(cfg: dict[str, Any]) -> Rewriter:
    backend = cfg.get("backend", "identity")
    if backend == "identity":
        return IdentityRewriter()
    if backend == "noise":
        return NoiseRewriter(cfg)
    raise ValueError(f"unknown rewrite backend {backend!r}")


def rewrite_shard(in_path: str, kept_path: str, rejected_path: str,
                  cfg: dict[str, Any]) -> dict[str, Any]:
    rewriter = get_rewriter(cfg)
    t = pq.read_table(in_path)
    new = rewriter.rewrite(t.column("id").to_pylist(), t.column("text").to_pylist())
    for name, col in rewriter.annotations().items():
        t = t.append_column(name, col)
    ok = pa.array([x is not None for x in new])
    kept = t.filter(ok)
    kept = kept.set_column(kept.schema.get_field_index("text"), "text",
                           pa.array([x for x in new if x is not None], pa.large_string()))
    rejected = t.filter(pc.invert(ok))
    write_parquet(kept, Path(kept_path))
    n_rej = len(rejected)
    if n_rej:
        reasons = pa.array([f"rewrite.{rewriter.name}.failed"] * n_rej)
        write_parquet(with_reject(rejected, "rewrite", reasons), Path(rejected_path))
    return {"docs_in": len(t), "docs_kept": len(kept), "docs_rejected": n_rej,
            "rejections": ({f"rewrite.{rewriter.name}.failed": {"first": n_rej, "alone": n_rej}}
                           if n_rej else {})}
