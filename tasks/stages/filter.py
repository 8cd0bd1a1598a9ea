"""Stages ``score`` (every score column, computed once) and ``filter`` (thresholds and corpus
rules decided over stored scores). Changing a threshold re-runs only ``filter``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from tasks import filter as filter_lib
from tasks.corpus import get_rule
from tasks.corpus.base import RuleContext, decision_path
from tasks.filters.base import get_filter
from tasks.stage import Artifact, Executor, Manifest, RunInfo, Stage, Upstream
from tasks.store import StageDir, atomic_write_json, merge_counts, shard_key


class Score(Stage):
    name = "score"
    group = "filter"
    code_version = 1
    recipe_key = "stages.filter (score parameters)"
    outputs = ("kept",)
    description = "document filters' scores and corpus rules' keys (hashes, MinHash), once"

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        f = run.recipe.stages.filter
        return {"filters": {n: {"score_version": get_filter(n).SCORE_VERSION,
                                **c.score_params()} for n, c in f.filters.items()},
                "order": list(f.filters),  # edit steps change the text the next steps see
                "corpus": {n: {"version": get_rule(n).VERSION, **c.score_params()}
                           for n, c in f.corpus_rules().items()
                           if hasattr(get_rule(n), "score")}}

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        f = run.recipe.stages.filter
        jobs = []
        for rel in up.docs.kept:
            k = shard_key(rel)
            jobs.append((k, (run.abs(rel), str(out.path / "scored" / f"part-{k}.parquet"),
                             f.filters, f.corpus_rules())))
        stats = ex.shards(out, filter_lib.score_shard, jobs, "score")
        return {**merge_counts(stats), "outputs": {"kept": [out.rel(a[1]) for _, a in jobs]}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        edits = manifest.extra.get("edits")
        if edits:  # lines removed, PII replaced: to the catalog and the log
            run.log.info("edits: %s", edits)
            run.catalog.record_metrics(run.run_id, [(0, f"edits.{k}", float(v))
                                                    for k, v in sorted(edits.items())])


def decide_rule(name: str, key_files: list[str], out_dir: str, cfg: Any, n_shards: int,
                work_dir: str, index_parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One corpus rule's decision over every shard's keys; runs in a Dask task (and fans out
    from there), writing per-shard decision files into a fresh ``out_dir``."""
    from tasks.corpus.base import worker_map

    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)  # an interrupted attempt's partial decisions
    out.mkdir(parents=True)
    ctx = RuleContext(n_shards=n_shards, work_dir=Path(work_dir), index_parts=index_parts,
                      map=worker_map)
    return get_rule(name).decide(key_files, out, cfg, ctx)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class Filter(Stage):
    name = "filter"
    code_version = 2  # 2: corpus rules (keys -> decide -> per-shard decisions)
    recipe_key = "stages.filter"
    outputs = ("kept", "rejected", "index")
    work = ("corpus", "shard")
    description = "thresholds on stored scores, then corpus rules (dedup, top k %)"

    def _index_parts(self, run: RunInfo, up: Upstream) -> list[dict[str, Any]]:
        from tasks import dedup_index

        if hasattr(self, "_parts"):  # read once: the version and the run see the same parts
            return self._parts  # type: ignore[has-type, no-any-return]
        f = run.recipe.stages.filter
        parts = []
        if f.dedup_index and f.corpus_rules():
            # the index parts seen are an input: a new part elsewhere means a new decision here
            parts = [{**p, "files": [run.abs(x) for x in p["files"]]}
                     for p in dedup_index.snapshot(run.catalog, f.dedup_index, up.docs.version)]
        self._parts = parts
        return parts

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        f = run.recipe.stages.filter
        return {"filter": f, "rules": {n: get_rule(n).VERSION for n in f.corpus_rules()}}

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        name = run.recipe.stages.filter.dedup_index
        return [up.docs.version] + [f"dedup_index:{name}:{p['stage_version']}"
                                    for p in self._index_parts(run, up)]

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        f = run.recipe.stages.filter
        scored = [run.abs(rel) for rel in up.docs.kept]
        corpus = f.corpus_rules()
        index = f.dedup_index if corpus else None
        base = out.path / "corpus"
        dirs = [base / f"{i}-{_slug(n)}" for i, n in enumerate(corpus)]
        keys_dirs = [str(d / "keys") for d in dirs]
        dec_dirs = [str(d / "decisions") for d in dirs]
        corpus_stats: dict[str, Any] = {}
        if corpus:
            # gather: every shard's keys of the rows in play, on Dask, resumable per shard
            ex.shards(out, filter_lib.corpus_keys,
                      [(f"keys-{shard_key(p)}", (p, i, f.filters, corpus, keys_dirs,
                                                 str(base / "work")))
                       for i, p in enumerate(scored)], "corpus keys")
            parts = self._index_parts(run, up)
            for i, (name, cfg) in enumerate(corpus.items()):
                marker = dirs[i] / "decided.json"
                if marker.is_file():
                    corpus_stats[name] = json.loads(marker.read_text())
                    continue
                files = [str(decision_path(keys_dirs[i], s)) for s in range(len(scored))]
                corpus_stats[name] = ex.task(decide_rule, name, files, dec_dirs[i], cfg,
                                             len(scored), str(dirs[i] / "work"), parts,
                                             desc=f"decide {name}")
                atomic_write_json(marker, corpus_stats[name])
        jobs = []
        for i, p in enumerate(scored):
            k = shard_key(p)
            jobs.append((k, (p, str(out.path / "kept" / f"part-{k}.parquet"),
                             str(out.path / "rejected" / f"part-{k}.parquet"), f.filters,
                             corpus, dec_dirs, i,
                             str(out.path / "index" / f"part-{k}.parquet") if index else None)))
        stats = ex.shards(out, filter_lib.decide_shard, jobs, "filter")
        outputs = {"kept": [out.rel(a[1]) for _, a in jobs],
                   "rejected": [out.rel(a[2]) for _, a in jobs]}
        if index:
            outputs["index"] = [out.rel(a[7]) for _, a in jobs]
        return {**merge_counts(stats), "corpus": corpus_stats, "outputs": outputs}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        from tasks import dedup_index
        from tasks.histograms import score_histograms

        f = run.recipe.stages.filter
        if f.dedup_index and "index" in manifest.outputs:
            # only a completed run's kept documents become "seen before" for later runs
            run.on_complete("add_dedup_part", *dedup_index.register_args(
                f.dedup_index, manifest.version, up.docs.version, manifest.outputs["index"],
                manifest.docs_kept, run.run_id))
        files = [run.data_root / rel for rel in manifest.kept + manifest.output("rejected")]
        run.artifacts.append(Artifact(
            key="datamill-scores", description=f"Filter score histograms, run {run.run_id}",
            markdown=f"# Score histograms, run `{run.run_id}`\n\nAll documents the filter "
                     f"scored (kept and rejected), stage version `{manifest.version}`.\n\n"
                     + score_histograms([str(p) for p in files])))
