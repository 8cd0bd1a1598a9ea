"""Stage ``train``: one proxy per seed in a Ray actor (GPU when the cluster has one), or
data-parallel under Ray Train; the metrics it writes are streamed into the run's log."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tasks.stage import ActorStage, Artifact, Executor, Manifest, RunInfo, Upstream
from tasks.store import StageDir


def tail_metrics(path: Path, stop: threading.Event, log: Any) -> None:
    """Stream the trainer's metrics lines into the log while it runs."""
    pos = 0
    while True:
        stopped = stop.wait(1.0)
        if path.exists():
            if path.stat().st_size < pos:  # a resumed run cut the file back to its checkpoint
                pos = 0
            with open(path) as fh:
                fh.seek(pos)
                while (line := fh.readline()).endswith("\n"):
                    m = json.loads(line)
                    pos = fh.tell()
                    if "old_domain_loss" in m:  # the stability gap's probe
                        log.info("train step %d old-domain loss %.4f", m["step"],
                                 m["old_domain_loss"])
                        continue
                    mix = " mix " + " ".join(f"{k}={v:.3f}" for k, v in m["mix"].items()) \
                        if "mix" in m else ""
                    log.info("train step %d loss %.4f lr %.2e grad_norm %.3f %.0f tok/s%s",
                             m["step"], m["loss"], m["lr"], m["grad_norm"], m["tokens_per_s"],
                             mix)
        if stopped:
            return


def train_workers(tcfg: Any, gpus: int, log: Any) -> int:
    """train.workers, or every GPU when there are several and the batch splits over them."""
    if tcfg.workers > 1:
        return int(tcfg.workers)
    if gpus > 1 and tcfg.batch_size % gpus == 0:
        return gpus
    if gpus > 1:
        log.warning("%d GPUs, but batch_size %d does not split over them: training on one",
                    gpus, tcfg.batch_size)
    return 1


def log_plan(tcfg: Any, data_dir: Path, init: Any, log: Any) -> dict[str, Any]:
    """The epochs each source will see (and a warning when data repeats), before training."""
    from tasks.train import prepare
    from tasks.train.repetition import describe, repeat_warning

    meta = json.loads((data_dir / "meta.json").read_text())
    plan = prepare(tcfg, data_dir, meta, init).plan
    log.info("%s", describe(plan))
    if warning := repeat_warning(plan):
        log.warning("%s", warning)
    return plan


class Train(ActorStage):
    name = "train"
    # 2: checkpoint/datamill.json (its data, for init_from), summary.json; 3: batches filled
    # from per-source pools deterministically (exact epochs), the data plan in the summary
    code_version = 3
    recipe_key = "stages.train"
    inputs = ("data_dir",)
    outputs = ("checkpoint", "metrics")
    description = "a proxy LM per seed (Ray actor; Ray Train DDP with train.workers > 1)"

    def variants(self, run: RunInfo, up: Upstream) -> list[Any]:
        return run.recipe.train_config().per_seed()  # one content-addressed stage per seed

    def _init(self, run: RunInfo, tcfg: Any) -> Any:
        from tasks.train import resolve_init

        return resolve_init(tcfg.init_from, run.data_root, seed=tcfg.seed) \
            if tcfg.init_from else None

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return variant.versioned()  # stability's probes alone do not version the stage

    def version_inputs(self, run: RunInfo, up: Upstream, variant: Any = None) -> list[str]:
        init = self._init(run, variant)  # continual pre-training: its start is an input
        return [up.get("tokenize").version] + ([f"init:{init.identity}"] if init else [])

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        tcfg, tok, init = variant, up.get("tokenize"), self._init(run, variant)
        if init is not None:
            run.log.info("continuing from %s (replay %.0f%% of %s)", init.checkpoint,
                         100 * tcfg.replay, tcfg.replay_data or init.data_dir)
        data_dir = Path(run.abs(tok.output("data_dir")))
        plan = log_plan(tcfg, data_dir, init, run.log)
        metrics = out.path / "metrics.jsonl"  # train() resumes it after a crash, or starts it
        stop = threading.Event()
        tail = threading.Thread(target=tail_metrics, args=(metrics, stop, run.log), daemon=True)
        tail.start()
        kwargs = {"config": tcfg, "data_dir": data_dir,
                  "out_dir": out.path, "metrics_path": metrics, "init": init}
        try:
            workers = train_workers(tcfg, int(ex.gpus()), run.log)
            if workers > 1:
                run.log.info("training data-parallel on %d Ray Train workers", workers)
                ex.distributed("tasks.train:train", kwargs, workers, out.path / "ray")
                summary = json.loads((out.path / "summary.json").read_text())
            else:
                summary = ex.actor("tasks.train:train", **kwargs)
        finally:
            stop.set()
            tail.join(timeout=5)
        n = tok.extra["train_docs"]
        return {"docs_in": n, "docs_kept": n, "docs_rejected": 0, "summary": summary,
                "data_plan": plan, "epochs": summary["epochs"], "mixing": summary["mixing"],
                "old_domain_loss": summary.get("old_domain_loss"),
                "init": {"run_id": init.run_id, "identity": init.identity,
                         "checkpoint": str(init.checkpoint)} if init else None,
                "outputs": {"checkpoint": out.rel(out.path / "checkpoint"),
                            "metrics": out.rel(metrics)}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        rows = []
        for line in (run.data_root / manifest.output("metrics")).read_text().splitlines():
            m = json.loads(line)
            if "old_domain_loss" in m:  # the stability gap's probe: a record of its own
                rows.append((m["step"], "old_domain_loss", float(m["old_domain_loss"])))
                continue
            rows += [(m["step"], k, float(m[k])) for k in ("loss", "lr", "grad_norm",
                                                          "tokens_per_s")]
            # the sampling proportions of the logged steps, per pool
            rows += [(m["step"], f"mix.{pool}", float(v)) for pool, v in m.get("mix", {}).items()]
        summary = manifest.extra.get("summary", {})
        end = int(summary.get("steps", 0))
        rows += [(end, f"epochs.{src}", float(e)) for src, e in summary.get("epochs", {}).items()]
        for r in (summary.get("mixing") or {}).get("rounds", []):  # Aioli's proportions
            rows += [(r["step"], f"aioli.{src}", float(v)) for src, v in r["proportions"].items()]
        run.catalog.record_metrics(run.run_id, rows, seed=variant.seed)
        run.artifacts.append(loss_curve(run))


def loss_curve(run: RunInfo) -> Artifact:
    """The training loss per seed so far: a sparkline plus first/last/min values."""
    from tasks.histograms import sparkline
    from tasks.train.stability import gap_rows

    curves: dict[int, list[tuple[int, float]]] = {}
    metrics = run.catalog.show(run.run_id)["metrics"]
    for m in metrics:
        if m["name"] == "loss":
            curves.setdefault(m.get("seed") or 0, []).append((m["step"], m["value"]))
    lines = [f"# Training loss, run `{run.run_id}`", "", "| seed | steps | first | last | min "
             "| curve |", "|---|---:|---:|---:|---:|---|"]
    for seed, pts in sorted(curves.items()):
        pts.sort()
        vals = [v for _, v in pts]
        lines.append(f"| {seed} | {pts[0][0]}–{pts[-1][0]} | {vals[0]:.4f} | {vals[-1]:.4f} | "
                     f"{min(vals):.4f} | `{sparkline(vals)}` |")
    if gaps := gap_rows(metrics):  # the stability gap: the init run's data, continued
        lines += ["", "Old-domain loss (the init run's data): the stability gap", "",
                  "| seed | initial | max (gap) | recovered |", "|---|---:|---|---|"]
        lines += ["| " + " | ".join(str(v) for v in g.values()) + " |" for g in gaps]
    return Artifact(key="datamill-loss-curve", markdown="\n".join(lines) + "\n",
                    description=f"Training loss curve, run {run.run_id}")
