"""Stage ``ingest``: raw files -> contract tables (one shard per input file, or per byte range
of a large JSONL input), quarantine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.stage import Executor, Manifest, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts


class Ingest(Stage):
    name = "ingest"
    # 2: normalisation, language id, more formats; 3: repeated ids rejected; 4: ids unique
    # across inputs, language tags in the contract's form, hostile records quarantined;
    # 5: language id on samples spread over the text (labels and scores change), large JSONL
    # inputs read in ranges (parts laid out per range); texts unchanged
    code_version = 5
    recipe_key = "input, stages.ingest"
    inputs = ("files",)
    outputs = ("kept", "quarantine")
    work = ("shard", "corpus")
    description = "raw files -> documents (extract, language id, normalise), quarantine"

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return {"input": run.recipe.input, "ingest": run.recipe.stages.ingest}

    def _inputs(self, run: RunInfo) -> list[tuple[Path, dict[str, Any]]]:
        """The inputs and their fingerprints (whose path is printable: a file name need not
        be UTF-8); with incremental ingest, only the new ones."""
        from tasks import ingest

        if hasattr(self, "_found"):
            return self._found  # type: ignore[has-type]
        inp, cfg = run.recipe.input, run.recipe.stages.ingest
        found = [(f, ingest.fingerprint(f)) for f in ingest.expand_inputs(inp.paths)]
        if cfg.incremental:
            # deltas: only files whose content this recipe has not consumed before
            for f, p in found:
                p["sha256"] = ingest.content_sha256(f)
            seen = run.catalog.consumed_hashes(run.recipe.name)
            new = [(f, p) for f, p in found if p["sha256"] not in seen]
            run.log.info("incremental ingest: %d new file(s), %d consumed before",
                         len(new), len(found) - len(new))
            found = new
        self._found = found
        return found

    def _files(self, run: RunInfo) -> list[dict[str, Any]]:
        """The input files' fingerprints; with incremental ingest, only the new ones."""
        return [p for _, p in self._inputs(run)]

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        return [f"{p['path']}:{p['size']}:{p['mtime_ns']}" for p in self._files(run)]

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        from tasks.ingest.plan import run_shards, shard_jobs

        inp, cfg = run.recipe.input, run.recipe.stages.ingest
        found = self._inputs(run)
        # one shard per input, or per range of a large JSONL input (tasks/ingest/ranges.py)
        jobs = shard_jobs([f for f, _ in found], str(out.path), inp.format, inp.fields, cfg, ex)
        # then ids unique per stage: a later input's id that an earlier one has gets a new one
        stats, renamed = run_shards(out, ex, jobs)
        langs: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for s in stats:
            for k, v in s.get("langs", {}).items():
                langs[k] = langs.get(k, 0) + v
            for k, v in s.get("skipped", {}).items():
                skipped[k] = skipped.get(k, 0) + v
        return {**merge_counts(stats), "files": [p for _, p in found],
                "quarantined": sum(s.get("quarantined", 0) for s in stats),
                "ids_renamed": renamed,  # kept documents given a new id (docs/outputs.md)
                "langs": dict(sorted((k, v) for k, v in langs.items() if v)),
                "skipped": dict(sorted(skipped.items())),  # records that are not documents
                "outputs": {"kept": sorted(out.rel(out.path / k) for s in stats
                                           for k in s["kept"]),
                            "quarantine": out.rel(out.path / "quarantine")}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        run.catalog.record_metrics(run.run_id, [(0, f"ingest.lang.{lang}", float(n)) for
                                                lang, n in manifest.extra.get("langs", {}).items()])
        if run.recipe.stages.ingest.incremental:  # consumed once the run completes
            run.on_complete("record_inputs", run.run_id, run.recipe.name, manifest.version,
                            self._files(run))
