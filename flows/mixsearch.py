"""The ``datamill-mixsearch`` flow: a static search over data mixtures, and the mixing law
fitted to it (tasks/train/mixlaw.py).

A recipe runs first up to tokenize, which gives each source's training rows; then N variants
of it, differing only in ``stages.train.source_weights`` (chosen so each run draws the
proportions of one simplex point), run through the main flow against one data root, as
``datamill ablation`` runs its recipes: every stage before train has one content address and
runs once. Each variant's per-source held-out bits per byte (mean over its seeds) and the
proportions its train stage actually drew (the data plan) are the law's data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import new_run_id, run_recipe
from infra.env import check_flow_params, check_id
from infra.env import data_root as resolve_data_root
from tasks.compare import evaluate_paths
from tasks.recipe import load_recipe
from tasks.train import mixlaw


def _search_name() -> str:
    from prefect.runtime import flow_run

    return flow_run.parameters.get("search_id") or "mixsearch-" + new_run_id()


def _stage(summary: dict[str, Any], name: str) -> list[Path]:
    return [Path(s["output_path"]) for s in summary["stages"] if s["stage"] == name]


def point_result(summary: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    """One variant's data: the proportions its train stages drew over `sources` (the data
    plan's rows drawn; the mean over seeds) and per-source held-out bits per byte (per seed and
    their mean)."""
    drawn = []
    for d in _stage(summary, "train"):
        plan = json.loads((d / "manifest.json").read_text())["summary"]["data_plan"]
        rows = np.array([plan["sources"].get(s, {}).get("rows_drawn", 0) for s in sources],
                        dtype=np.float64)
        drawn.append(rows / rows.sum())
    per_seed: dict[str, list[float]] = {}
    for d in evaluate_paths(summary["stages"]):
        res = json.loads((d / "results.json").read_text())
        for src, r in res.get("by_source", {}).items():
            per_seed.setdefault(src, []).append(float(r["bpb"]))
    return {"run_id": summary["run_id"], "proportions": np.mean(drawn, axis=0).tolist(),
            "bpb": {s: float(np.mean(v)) for s, v in sorted(per_seed.items())},
            "bpb_seeds": per_seed}


def fit_and_predict(points: list[dict[str, Any]], sources: list[str],
                    objective: dict[str, float] | None, rows: dict[str, int]
                    ) -> dict[str, Any]:
    """The law fitted to the points' held-out losses of the mixed sources, its quality and the
    predicted best mixture (with the source_weights that give it); `error` instead when the
    points cannot support a fit."""
    missing = [s for s in sources if any(s not in pt["bpb"] for pt in points)]
    if missing:
        return {"error": f"no held-out documents of {missing} were scored; the law needs every "
                "mixed source's held-out loss (raise evaluate.max_docs)"}
    p = np.array([pt["proportions"] for pt in points])
    y = np.array([[pt["bpb"][s] for s in sources] for pt in points])
    try:
        w = mixlaw.objective_weights(sources, objective)
        law = mixlaw.fit_law(p, y, sources, sources)
    except ValueError as e:  # NotEnoughPoints included
        return {"error": str(e)}
    best, value = mixlaw.predict_best(law, w)
    at_best = law.predict(best)[0]
    return {"params": law.params(), "quality": mixlaw.quality(p, y, law),
            "objective": dict(zip(sources, w.tolist(), strict=True)),
            "best": dict(zip(sources, best.tolist(), strict=True)),
            "best_loss": value,
            "best_losses": dict(zip(sources, at_best.tolist(), strict=True)),
            "best_source_weights": dict(zip(
                sources, mixlaw.weights_for(best, [rows[s] for s in sources]), strict=True)),
            "observed_best": int(np.argmin(y @ w))}


def _markdown(out: dict[str, Any]) -> str:
    src = out["sources"]
    lines = [f"# datamill mixsearch {out['search']}", "",
             "| point | run | " + " | ".join(f"p {s}" for s in src) + " | "
             + " | ".join(f"bpb {s}" for s in src) + " |",
             "|---|---|" + "---|" * (2 * len(src))]
    for i, pt in enumerate(out["points"]):
        lines.append(f"| {i} | {pt['run_id']} | "
                     + " | ".join(f"{x:.3f}" for x in pt["proportions"]) + " | "
                     + " | ".join(f"{pt['bpb'].get(s, float('nan')):.4f}" for s in src) + " |")
    fit = out["fit"]
    if "error" in fit:
        lines += ["", f"No fit: {fit['error']}"]
    else:
        lines += ["", "Predicted best mixture: " + ", ".join(
            f"{s} {v:.3f}" for s, v in fit["best"].items())
            + f" (weighted loss {fit['best_loss']:.4f})"]
    return "\n".join(lines) + "\n"


@flow(name="datamill-mixsearch", flow_run_name=_search_name, log_prints=True)
def mixsearch(recipe: str, points: int, seeds: int = 1, method: str = "grid",
              sources: list[str] | None = None, sample_seed: int = 0,
              objective: dict[str, float] | None = None, data_root: str | None = None,
              search_id: str | None = None) -> dict[str, Any]:
    """Train ``points`` mixtures of ``recipe`` (a simplex lattice, method grid, or a seeded
    Dirichlet sample, method random) over ``sources`` (default: every source of the data),
    ``seeds`` seeds each, and fit the static mixing law to their held-out losses."""
    if method not in ("grid", "random"):
        raise ValueError(f"method is grid or random, got {method!r}")
    if points < 1 or seeds < 1:
        raise ValueError("points and seeds must be at least 1")
    base = load_recipe(recipe)
    raw = yaml.safe_load(Path(recipe).read_text(encoding="utf-8"))
    root = resolve_data_root(data_root, base.data_root)
    search_id = search_id or "mixsearch-" + new_run_id()
    check_id(search_id, "search_id")  # it becomes a path
    check_flow_params(data_root=root)
    log = get_run_logger()
    folder = root / "mixsearch" / search_id
    folder.mkdir(parents=True, exist_ok=True)

    # the data first: its sources and their rows set the weights that give each mixture
    head = run_recipe(recipe, until="tokenize", data_root=str(root), run_id=new_run_id())
    meta = json.loads((_stage(head, "tokenize")[0] / "meta.json").read_text())
    rows = mixlaw.source_rows(meta)
    chosen = list(sources) if sources else list(rows)
    unknown = [s for s in chosen if s not in rows]
    if unknown:
        raise ValueError(f"sources {unknown} have no training rows; the data's sources are "
                         f"{list(rows)}")
    if len(chosen) < 2:
        raise ValueError(f"a mixture search needs two sources or more, got {chosen}")
    m = len(chosen)
    grid = (mixlaw.simplex_grid(m, points) if method == "grid"
            else mixlaw.dirichlet_points(m, points, sample_seed))
    if len(grid) != points:
        log.info("the simplex lattice of %d sources with at least %d points has %d", m, points,
                 len(grid))
    if len(grid) < mixlaw.points_needed(m):
        log.warning("%d points: the mixing law of %d sources needs at least %d, so no law will "
                    "be fitted", len(grid), m, mixlaw.points_needed(m))

    results = []
    for i, p in enumerate(grid):
        variant = json.loads(json.dumps(raw))  # a deep copy
        train = variant.setdefault("stages", {}).setdefault("train", None) or {}
        weights = dict.fromkeys(rows, 0.0)  # sources left out of the search are not trained on
        weights.update(zip(chosen, mixlaw.weights_for(p, [rows[s] for s in chosen]),
                           strict=True))
        train["source_weights"] = weights
        if seeds > 1:
            train["seeds"] = list(range(seeds))
        variant["stages"]["train"] = train
        variant["name"] = f"{base.name}-mix{i:02d}"
        path = folder / f"point-{i:02d}.yaml"
        path.write_text(yaml.safe_dump(variant, sort_keys=False))
        log.info("mixsearch %s: point %d of %d, proportions %s", search_id, i + 1, len(grid),
                 ", ".join(f"{s} {x:.3f}" for s, x in zip(chosen, p, strict=True)))
        summary = run_recipe(str(path), data_root=str(root), run_id=new_run_id())
        if not evaluate_paths(summary["stages"]):
            raise ValueError(f"recipe {recipe} ran no evaluate stage: a mixture search needs "
                             "held-out losses")
        results.append({**point_result(summary, chosen), "target": p.tolist(),
                        "recipe": str(path)})

    fit = fit_and_predict(results, chosen, objective, rows)
    out = {"search": search_id, "recipe": recipe, "method": method, "seeds": seeds,
           "sources": chosen, "rows": {s: rows[s] for s in chosen},
           "points_needed": mixlaw.points_needed(m), "points": results, "fit": fit,
           "data_root": str(root),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    from flows.cli.common import strict_json

    (folder / "result.json").write_text(json.dumps(strict_json(out), indent=1))
    create_markdown_artifact(key="datamill-mixsearch", markdown=_markdown(out),
                             description=f"datamill mixsearch {search_id}")
    if "error" in fit:
        log.warning("no mixing law fitted: %s", fit["error"])
    else:
        log.info("predicted best mixture: %s", ", ".join(
            f"{s} {v:.3f}" for s, v in fit["best"].items()))
    return out
