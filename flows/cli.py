"""The ``datamill`` command. Heavy libraries (prefect, torch, ray, dask) are imported only by
the sub-commands that need them, so ``datamill --help`` answers at once."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datamill",
        description="Curate LM training data, train proxy models on it, and tell whether a "
        "data change made the model better.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a recipe: ingest -> rewrite -> filter -> tokenize -> "
                       "train -> evaluate")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("--until", choices=["ingest", "rewrite", "filter", "tokenize", "train",
                                       "evaluate"], help="stop after this stage")
    r.add_argument("--data-root", help="where outputs and the catalog live "
                   "(default: $DATAMILL_DATA_ROOT, else the recipe's data_root)")
    r.add_argument("--json", action="store_true", help="print the run summary as JSON")

    v = sub.add_parser("validate", help="check a recipe and print it with defaults filled in")
    v.add_argument("recipe")

    ls = sub.add_parser("runs", help="list runs, newest first")
    ls.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else .datamill")
    ls.add_argument("--json", action="store_true")

    sh = sub.add_parser("show", help="show one run's stages and counts")
    sh.add_argument("run", help="a run id, or 'latest'")
    sh.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else .datamill")
    sh.add_argument("--json", action="store_true")
    return p


def _fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"datamill: error: {msg}", file=sys.stderr)
    return code


def _catalog(data_root: str | None) -> Any:
    from infra.env import data_root as resolve
    from tasks.catalog import Catalog

    return Catalog(resolve(data_root) / "catalog.duckdb")


def cmd_run(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.ingest import InputError, expand_inputs
    from tasks.recipe import RecipeError, load_recipe

    try:  # fail fast, before any engine starts, on a bad recipe or input
        recipe = load_recipe(args.recipe)
        expand_inputs(recipe.input.paths)
    except (RecipeError, InputError) as e:
        return _fail(str(e))

    from flows.pipeline import new_run_id, run_recipe
    from infra import dask as dask_engine
    from infra import ray as ray_engine

    run_id = new_run_id()
    print(f"datamill: run {run_id} of recipe {recipe.name!r}", file=sys.stderr)
    try:
        summary = run_recipe(args.recipe, until=args.until, data_root=args.data_root,
                             run_id=run_id)
    finally:
        dask_engine.shutdown()
        ray_engine.shutdown()
    if args.json:
        print(json.dumps(summary, default=str, indent=2))
    else:
        _print_stages(summary["stages"])
        print(f"\nrun {summary['run_id']}: {summary['status']}")
        print(f"report: {summary['report']}")
    return 0


def _print_stages(stages: list[dict[str, Any]]) -> None:
    print(f"{'stage':<10} {'version':<17} {'in':>8} {'kept':>8} {'rejected':>9} {'seconds':>8}")
    for s in stages:
        flag = " (cached)" if s.get("cached") else ""
        print(f"{s['stage']:<10} {s['version']:<17} {s['docs_in']:>8} {s['docs_kept']:>8} "
              f"{s['docs_rejected']:>9} {s['seconds']:>8.1f}{flag}")


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from tasks.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        return _fail(str(e))
    print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    try:
        runs = _catalog(args.data_root).runs()
    except FileNotFoundError as e:
        return _fail(str(e), 1)
    if args.json:
        print(json.dumps(runs, default=str, indent=2))
        return 0
    for r in runs:
        print(f"{r['run_id']}  {r['status']:<10} {r['recipe']:<20} {r['started_at']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        run = _catalog(args.data_root).show(args.run)
    except (FileNotFoundError, LookupError) as e:
        return _fail(str(e).strip("'\""), 1)
    stage_keys = ["stage", "version", "docs_in", "docs_kept", "docs_rejected", "seconds",
                  "output_path"]
    out = {"run_id": run["run_id"], "status": run["status"], "report": run["report"],
           "stages": [{k: s[k] for k in stage_keys} for s in run["stages"]]}
    if args.json:
        print(json.dumps(out, default=str, indent=2))
        return 0
    print(f"run {run['run_id']}  recipe {run['recipe']}  status {run['status']}")
    _print_stages(run["stages"])
    if run["rejections"]:
        print("\nrejections (dropped first / would drop alone):")
        for r in run["rejections"]:
            print(f"  {r['stage']:<8} {r['rule']:<40} {r['docs']:>7} {r['docs_alone']:>7}")
    if run["evals"]:
        print("\nevaluation:")
        for e in run["evals"]:
            print(f"  {e['task']:<40} {e['metric']:<6} {e['value']:.4f}")
    if run["error"]:
        print(f"\nerror: {run['error']}")
    print(f"\nreport: {run['report']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "runs": cmd_runs, "show": cmd_show}
    return handler[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
