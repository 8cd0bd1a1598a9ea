"""Stage ``ingest``: raw files -> contract tables (one shard per input file), quarantine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.stage import Executor, Manifest, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts


class Ingest(Stage):
    name = "ingest"
    code_version = 3  # 2: normalisation, language id, more formats; 3: repeated ids rejected
    recipe_key = "input, stages.ingest"
    inputs = ("files",)
    outputs = ("kept", "quarantine")
    work = ("shard",)
    description = "raw files -> documents (extract, language id, normalise), quarantine"

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return {"input": run.recipe.input, "ingest": run.recipe.stages.ingest}

    def _files(self, run: RunInfo) -> list[dict[str, Any]]:
        """The input files' fingerprints; with incremental ingest, only the new ones."""
        from tasks import ingest

        if hasattr(self, "_prints"):
            return self._prints  # type: ignore[has-type]
        inp, cfg = run.recipe.input, run.recipe.stages.ingest
        prints = [ingest.fingerprint(f) for f in ingest.expand_inputs(inp.paths)]
        if cfg.incremental:
            # deltas: only files whose content this recipe has not consumed before
            for p in prints:
                p["sha256"] = ingest.content_sha256(Path(p["path"]))
            seen = run.catalog.consumed_hashes(run.recipe.name)
            new = [p for p in prints if p["sha256"] not in seen]
            run.log.info("incremental ingest: %d new file(s), %d consumed before",
                         len(new), len(prints) - len(new))
            prints = new
        self._prints = prints
        return prints

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        return [f"{p['path']}:{p['size']}:{p['mtime_ns']}" for p in self._files(run)]

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        from tasks import ingest

        inp, cfg = run.recipe.input, run.recipe.stages.ingest
        prints = self._files(run)
        jobs = [(f"{i:05d}", (p["path"], f"{i:05d}", str(out.path), inp.format, inp.fields, cfg))
                for i, p in enumerate(prints)]
        stats = ex.shards(out, ingest.ingest_file, jobs, "ingest")
        langs: dict[str, int] = {}
        skipped: dict[str, int] = {}
        for s in stats:
            for k, v in s.get("langs", {}).items():
                langs[k] = langs.get(k, 0) + v
            for k, v in s.get("skipped", {}).items():
                skipped[k] = skipped.get(k, 0) + v
        return {**merge_counts(stats), "files": prints,
                "quarantined": sum(s.get("quarantined", 0) for s in stats),
                "langs": dict(sorted(langs.items())),  # kept documents per language
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
