"""Rewrite: turn documents into better training text with a model (WRAP, REWIRE, Nemotron-CC).

The stage's seam: a ``Rewriter`` maps a batch of texts to rewritten texts (``None`` = could not
rewrite: the document is rejected with a reason, never silently dropped). Backends (an
OpenAI-compatible HTTP server, local models on Ray actors) implement the protocol; ``identity``
copies text and exercises the per-shard path. With ``rewrite: null`` in a recipe the stage is a
pass-through that re-uses its input shards without copying them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.llm.driver import TRANSIENT
from tasks.llm.driver import rewrite_llm as rewrite_llm  # the LLM request pool, re-exported
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


# ============================================================================ LLM rewriting
LLM_BACKENDS = ("openai", "local", "embedded")
PROVENANCE = [pa.field("rewritten_from", pa.string()), pa.field("prompt", pa.string()),
              pa.field("model", pa.string()), pa.field("backend", pa.string()),
              pa.field("tokens_in", pa.int64()), pa.field("tokens_out", pa.int64())]
# the built-in corpus rules: a duplicate is not improved by rewriting, nor is a rank cut a
# quality verdict
CORPUS_RULE_PREFIXES = ("exact_dedup.", "url_dedup.", "minhash_dedup.", "top_k.")


def _unit_hash(seed: int, doc_id: str) -> float:
    import xxhash

    return xxhash.xxh64_intdigest(f"{seed}:{doc_id}".encode()) / 2.0**64


def select_mask(ids: list[str], reasons: list[str | None] | None, cfg: dict[str, Any]
                ) -> list[bool]:
    """Which documents get a rewrite attempt. ``reasons`` (a filter's reject_reason per doc)
    only in recycle mode: documents rejected by the named rules (default: every rule except
    the built-in corpus rules': dedup and top_k). Then a random fraction, by a hash of
    (seed, id): the same documents on every run and on any number of workers."""
    if reasons is None:
        mask = [True] * len(ids)
    else:
        rules = cfg.get("recycle_rules")
        mask = []
        for r in reasons:
            r = r or ""
            if rules is None:
                mask.append(bool(r) and not r.startswith(CORPUS_RULE_PREFIXES))
            else:
                mask.append(any(r == x or r.startswith(x.rstrip(".") + ".") for x in rules))
    frac = float(cfg.get("sample_fraction", 1.0))
    if frac < 1.0:
        seed = int(cfg.get("sample_seed", 0))
        mask = [m and _unit_hash(seed, i) < frac for m, i in zip(mask, ids, strict=True)]
    return mask


@dataclass
class Shard:
    job: dict[str, Any]
    table: pa.Table  # originals (rewrite, route) or the filter's rejects (recycle mode)
    selected: list[int]  # per attempt: its document's row (a routed doc may have several)
    keys: list[list[str]]  # per attempt: its chunks' request keys, in order
    waiting: set[str]
    prompts: list[Any] = field(default_factory=list)  # per attempt: its Prompt


def attempt_prompts(t: pa.Table, mask: list[bool], prompt: Any) -> list[tuple[int, Any]]:
    """(row, prompt) per rewrite attempt: one per selected row for a single prompt; for a
    ``Routing`` (tasks/prompts/routing.py), one per prompt of the route holding the row's
    bucket, none for a null bucket or one no route holds."""
    from tasks.prompts.routing import Routing

    if not isinstance(prompt, Routing):
        return [(i, prompt) for i, m in enumerate(mask) if m]
    if prompt.column not in t.column_names:
        raise ValueError(f"prompt {prompt.name!r} routes by {prompt.column!r}, which these "
                         f"documents lack: add the quality_buckets corpus rule to the filter "
                         f"stage (stages.filter.corpus)")
    values = t.column(prompt.column).to_pylist()
    return [(i, p) for i, m in enumerate(mask) if m for p in prompt.prompts_for(values[i])]


def plan_shard(job: dict[str, Any], cfg: dict[str, Any], prompt: Any, key_model: str,
               sampling_key: dict[str, Any]) -> tuple[Shard, dict[str, Any]]:
    """Read a shard, pick documents, chunk them; returns the shard and its requests by key
    (``key_model``: the model as cache keys name it, ``tasks.llm.cache_model``)."""
    from tasks.llm.base import Request
    from tasks.llm.cache import request_key
    from tasks.prompts import chunk_text

    t = pq.read_table(job["source"])
    ids = t.column("id").to_pylist()
    reasons = t.column("reject_reason").to_pylist() if job["mode"] == "recycle" else None
    mask = select_mask(ids, reasons, cfg)
    texts = t.column("text").to_pylist()
    selected, keys, prompts, reqs = [], [], [], {}
    for i, p in attempt_prompts(t, mask, prompt):
        budget = cfg.get("chunk_tokens") or p.chunk_tokens
        digest = p.digest()
        ks = []
        for chunk in chunk_text(texts[i], budget):
            k = request_key(chunk, digest, key_model, cfg["api"], sampling_key)
            ks.append(k)
            if k not in reqs:
                reqs[k] = Request(k, messages=p.messages(chunk)) if cfg["api"] == "chat" \
                    else Request(k, prompt=p.completion(chunk))
        selected.append(i)
        keys.append(ks)
        prompts.append(p)
    return Shard(job, t, selected, keys, set(reqs), prompts), reqs


def _null_provenance(t: pa.Table) -> pa.Table:
    for f in PROVENANCE:
        if f.name not in t.column_names:
            t = t.append_column(f, pa.nulls(len(t), f.type))
    return t


def finish_shard(sh: Shard, outputs: dict[str, dict[str, Any]], errors: dict[str, str],
                 cfg: dict[str, Any], prompt: Any, model: str) -> dict[str, Any]:
    """Assemble one shard from the answers: rewrites (with provenance) and rejected attempts,
    then the optional post-filter and the mixer; write files, then the shard's marker: only
    when no document failed transiently (``rewrite.transient_error``: retried next run)."""
    from tasks.prompts import merge_chunks
    from tasks.schema import DOC_COLUMNS
    from tasks.store import atomic_write_json

    job, t = sh.job, sh.table
    recycle = job["mode"] == "recycle"
    if recycle:  # the filter's scores describe the original text, not its rewrite
        base = t.select([c for c in t.column_names if c in DOC_COLUMNS])
    else:
        base = t
    # route: the filter's kept documents, their score columns (bucket included) describing
    # the original; a rewrite carries them null
    blank = [c for c in t.column_names if c not in DOC_COLUMNS] \
        if job["mode"] == "route" else []
    attempt_prompts = sh.prompts or [prompt] * len(sh.selected)
    ok_idx, ok_text, ok_tin, ok_tout, ok_name = [], [], [], [], []
    bad_idx, bad_reason, bad_tin, bad_tout, bad_name = [], [], [], [], []
    for i, ks, pr in zip(sh.selected, sh.keys, attempt_prompts, strict=True):
        parts, reason, tin, tout = [], None, 0, 0
        for k in ks:
            if k in errors:
                reason = errors[k]
                break
            o = outputs[k]
            tin += int(o.get("tokens_in") or 0)
            tout += int(o.get("tokens_out") or 0)
            p = pr.parse(o["output"])
            if p.text is None:
                if p.reason == pr.reject_reason and pr.reject_if is not None:
                    continue  # this chunk had nothing useful; the others may
                reason = p.reason
                break
            parts.append(p.text)
        if reason is None and not parts:
            reason = pr.reject_reason if pr.reject_if is not None else "empty_output"
        if reason is None:
            ok_idx.append(i)
            ok_text.append(merge_chunks(parts))
            ok_tin.append(tin)
            ok_tout.append(tout)
            ok_name.append(pr.name)
        else:
            bad_idx.append(i)
            bad_reason.append(f"rewrite.{reason}")
            bad_tin.append(tin)
            bad_tout.append(tout)
            bad_name.append(pr.name)

    def rows(idx: list[int], texts: list[str] | None, tin: list[int], tout: list[int],
             names: list[str]) -> pa.Table:
        r = base.take(pa.array(idx, pa.int64()))
        src_ids = r.column("id").to_pylist()
        # keep the contract's fields (and their non-null flags) so shards concatenate
        r = r.set_column(r.schema.get_field_index("id"), base.schema.field("id"),
                         pa.array([f"{x}~{nm}" for x, nm in zip(src_ids, names, strict=True)],
                                  pa.string()))
        if texts is not None:
            r = r.set_column(r.schema.get_field_index("text"), base.schema.field("text"),
                             pa.array(texts, pa.large_string()))
        for c in blank:
            j = r.schema.get_field_index(c)
            r = r.set_column(j, r.schema.field(j), pa.nulls(len(r), r.schema.field(j).type))
        n = len(idx)
        cols = [pa.array(src_ids, pa.string()), pa.array(names, pa.string()),
                pa.array([model] * n, pa.string()), pa.array([cfg["backend"]] * n, pa.string()),
                pa.array(tin, pa.int64()), pa.array(tout, pa.int64())]
        for f, c in zip(PROVENANCE, cols, strict=True):
            r = r.drop_columns([f.name]) if f.name in r.column_names else r
            r = r.append_column(f, c)
        return r

    rewrites = rows(ok_idx, ok_text, ok_tin, ok_tout, ok_name)
    failed = rows(bad_idx, None, bad_tin, bad_tout, bad_name)
    fail_reasons = list(bad_reason)
    rejected_parts: list[pa.Table] = []

    def drop(mask: list[bool], reason: str) -> None:
        """Move the rewrites where mask is True to the rejected side with ``reason``."""
        nonlocal rewrites
        if any(mask):
            m = pa.array(mask)
            rejected_parts.append(with_reject(rewrites.filter(m), job["reject_stage"],
                                              pa.array([reason] * sum(mask))))
            rewrites = rewrites.filter(pc.invert(m))

    # recycle: a rewrite must pass the same quality rules its original failed (scored even
    # when there is none, so every shard's kept file has the same columns)
    if recycle and job.get("filters"):
        from tasks.filter import first_failure, score_table

        scored = score_table(rewrites, job["filters"], None)
        reason, _ = first_failure(scored, job["filters"])
        rewrites = scored
        for rule in sorted(set(reason) - {""}):
            drop([r == rule for r in reason], str(rule))
    # post-filter: keep the top k % of rewrites by a quality score
    top = cfg.get("keep_top_percent")
    if top is not None and len(rewrites):
        scores = quality_scores(rewrites, cfg["quality_score"])
        n_keep = int(round(len(scores) * top / 100.0))
        order = sorted(range(len(scores)), key=lambda j: (-scores[j], rewrites["id"][j].as_py()))
        keep = set(order[:n_keep])
        drop([j not in keep for j in range(len(scores))], "rewrite.post_filter")
    # mixer: at least mix_ratio real documents per synthetic one; excess rewrites dropped
    ratio = cfg.get("mix_ratio")
    n_real = pq.read_metadata(job["real"]).num_rows if recycle else len(t)
    if ratio is not None and len(rewrites):
        allowed = int(n_real / ratio) if ratio > 0 else len(rewrites)
        if len(rewrites) > allowed:
            seed = int(cfg.get("sample_seed", 0))
            h = [_unit_hash(seed + 1, x) for x in rewrites.column("id").to_pylist()]
            order = sorted(range(len(h)), key=lambda j: h[j])
            keep = set(order[:allowed])
            drop([j not in keep for j in range(len(h))], "rewrite.mix_ratio")
    if len(failed):
        rejected_parts.insert(0, with_reject(failed, job["reject_stage"], pa.array(fail_reasons)))

    kept = rewrites if recycle else pa.concat_tables(
        [_null_provenance(base), rewrites.select(_null_provenance(base).column_names)])
    write_parquet(kept, Path(job["kept"]))
    rejected = pa.concat_tables(rejected_parts, promote_options="permissive") \
        if rejected_parts else None
    if rejected is not None and len(rejected):
        write_parquet(rejected, Path(job["rejected"]))
    else:  # a shard redone after transient failures may have none left
        Path(job["rejected"]).unlink(missing_ok=True)
    n_attempts = len(sh.selected)
    counts: dict[str, dict[str, int]] = {}
    if rejected is not None:
        for r in rejected.column("reject_reason").to_pylist():
            c = counts.setdefault(r, {"first": 0, "alone": 0})
            c["first"] += 1
            c["alone"] += 1
    n_rej = 0 if rejected is None else len(rejected)
    real_in = n_real
    stats = {"docs_in": real_in + n_attempts, "docs_kept": real_in + len(rewrites),
             "docs_rejected": n_rej, "rejections": counts, "originals": real_in,
             "attempts": n_attempts, "rewrites_kept": len(rewrites),
             "by_prompt": by_prompt(ok_name + bad_name, rewrites.column("prompt").to_pylist()),
             "tokens_in": int(sum(ok_tin) + sum(bad_tin)),
             "tokens_out": int(sum(ok_tout) + sum(bad_tout)),
             "kept_file": job["kept"] if len(kept) else None,
             "transient_failures": counts.get(f"rewrite.{TRANSIENT}", {}).get("first", 0)}
    if not stats["transient_failures"]:  # else not done: the next run redoes this shard
        atomic_write_json(Path(job["marker"]), stats)
    return stats


def by_prompt(attempted: list[str], kept: list[str]) -> dict[str, dict[str, int]]:
    """Per prompt: rewrite attempts and rewrites kept (after the post-filter and mixer)."""
    out: dict[str, dict[str, int]] = {}
    for names, k in ((attempted, "attempts"), (kept, "kept")):
        for n in names:
            c = out.setdefault(n, {"attempts": 0, "kept": 0})
            c[k] += 1
    return out


def quality_scores(t: pa.Table, spec: str) -> list[float]:
    """``<filter>.<stat>``: a registry filter's score column (``<filter>_<stat>``), computed
    with the filter's defaults; higher is better. Missing values rank last."""
    from tasks.filters.base import get_filter

    name, _, stat = spec.partition(".")
    module = get_filter(name)
    scores = module.score(t, module.Config())
    col = f"{name}_{stat}"
    if col not in scores.column_names:
        raise ValueError(f"rewrite.quality_score {spec!r}: {name} has no column {col!r}; "
                         f"it has {scores.column_names}")
    return [float("-inf") if v is None else float(v) for v in scores.column(col).to_pylist()]
