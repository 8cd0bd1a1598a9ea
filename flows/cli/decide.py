"""``datamill compare``, ``datamill ablation`` and ``datamill eval``: is a data change better?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows.cli.common import DATA_ROOT_HELP, catalog, engines, fail, print_json

MIN_SNR_HELP = "leave tasks whose SNR is below X out of the aggregate"


def add_parser(sub: argparse._SubParsersAction) -> None:
    cmp_ = sub.add_parser("compare", help="is run B better than run A? paired bootstrap, "
                          "verdict and SNR per task and metric")
    cmp_.add_argument("run_a", help="the baseline run")
    cmp_.add_argument("run_b", nargs="+", help="run(s) compared with the baseline")
    cmp_.add_argument("--data-root", help=DATA_ROOT_HELP)
    cmp_.add_argument("--json", action="store_true")
    cmp_.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    cmp_.add_argument("--min-snr", type=float, default=None, metavar="X", help=MIN_SNR_HELP)
    cmp_.add_argument("--report", help="HTML report path (default: <data-root>/compare/"
                      "<A>-vs-<B>.html)")
    cmp_.add_argument("--on", metavar="RUN|PATH", help="score every run's model on one "
                      "held-out set and compare those scores: a run's held-out documents, or "
                      "a Parquet/JSONL file of documents (text; id, source, lang optional)")
    cmp_.set_defaults(handler=cmd_compare)

    ab = sub.add_parser("ablation", help="run recipes side by side (shared stages run once) "
                        "and compare each with the first")
    ab.add_argument("recipes", nargs="+", metavar="RECIPE", help="recipe YAML files; the "
                    "first is the baseline")
    ab.add_argument("--data-root", help="one data root for all (default: $DATAMILL_DATA_ROOT, "
                    "else the first recipe's)")
    ab.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ab.add_argument("--min-snr", type=float, default=None, metavar="X", help=MIN_SNR_HELP)
    ab.add_argument("--json", action="store_true")
    ab.set_defaults(handler=cmd_ablation)

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
    ev.add_argument("--data-root", help=DATA_ROOT_HELP)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(handler=cmd_eval)


def print_decisions(rows: list[dict[str, Any]], snr_rows: list[dict[str, Any]],
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
              f"{r['snr']:>6.1f}  {r['verdict']}{'' if r.get('decides', True) else '  (-)'}")
    for r in rows:
        if r.get("note"):
            print(f"  {r['task']} ({r.get('model', 'B')}): {r['note']}")
    print("\nsignal and noise per task (across all compared models):")
    for s in snr_rows:
        print(f"  {s['task']:<{w}} {s['metric']:<11} signal {s['signal']:.4f}  noise "
              f"{s['noise']:.4f}  SNR {s['snr']:.1f}")
    print("SNR = spread between the models / spread over seeds and last checkpoints (Signal "
          "and Noise, AI2); nan with one seed and no scored checkpoints.")
    print_choice(snr_rows)


def print_choice(snr_rows: list[dict[str, Any]]) -> None:
    """Accuracy's and gold-continuation bpb's SNR side by side, and which one decides."""
    from tasks.snr import choose

    choices = choose(snr_rows)
    if not choices:
        return
    w = max(16, *(len(c["task"]) for c in choices))
    print("\ndeciding metric per multiple-choice task (the higher SNR; (-) above: not "
          "deciding):")
    print(f"  {'task':<{w}} {'accuracy SNR':>14} {'gold bpb SNR':>13}  decides")
    for c in choices:
        acc = f"{c['accuracy']} {c['acc_snr']:.1f}"
        print(f"  {c['task']:<{w}} {acc:>14} {c['bpb_snr']:>13.1f}  {c['metric']}"
              + ("" if c["measured"] else "  (SNR not measured: default)"))


def cmd_compare(args: argparse.Namespace) -> int:
    from tasks.compare import decide, evaluate_paths, overlap, unique_labels

    cat = catalog(args.data_root)
    try:
        runs = [cat.show(r) for r in (args.run_a, *args.run_b)]
    except (FileNotFoundError, LookupError) as e:
        return fail(str(e).strip("'\""), 1)
    labels = unique_labels([r["run_id"] for r in runs])
    title = f"datamill compare: baseline {runs[0]['run_id']}"
    if args.on:
        try:
            models, on = _score_on(cat, args.on, dict(zip(labels, runs, strict=True)))
        except (FileNotFoundError, LookupError, ValueError) as e:
            return fail(str(e).strip("'\""), 1)
        title += f", all scored on {on}"
    else:
        models = {}
        for label, run in zip(labels, runs, strict=True):
            models[label] = evaluate_paths(run["stages"])
            if not models[label]:
                return fail(f"run {run['run_id']} has no evaluate stage", 1)
        shared = overlap(models)
        if shared["shared"] == 0:
            return _nothing_shared(args, runs, shared)
    path = Path(args.report) if args.report else (
        cat.path.parent / "compare" / f"{runs[0]['run_id']}-vs-{runs[-1]['run_id']}.html")
    run_ids = {lb: r["run_id"] for lb, r in zip(models, runs, strict=True)}
    res = decide(cat, models, run_ids, title, path, n_boot=args.boot, min_snr=args.min_snr)
    many = len(runs) > 2
    rows = res["rows"] if many else [{k: v for k, v in r.items() if k != "model"}
                                     for r in res["rows"]]
    if args.json:
        print_json(rows)
        return 0
    print(f"A = {runs[0]['run_id']} ({runs[0]['recipe']})   B = "
          + ", ".join(f"{r['run_id']} ({r['recipe']})" for r in runs[1:]))
    if args.on:
        print(f"all scored on {on}")
    print_decisions(res["rows"], res["snr"], many)
    print(f"report: {path}")
    return 0


NO_SHARED = "no_shared_items"


def _nothing_shared(args: argparse.Namespace, runs: list[dict[str, Any]],
                    shared: dict[str, Any]) -> int:
    """Runs scored on different held-out data (two refresh runs, each on its own new
    documents) have no item to pair: say so and how to compare them, exit 1."""
    counts = list(shared["items"].values())
    if args.json:
        print_json({"status": NO_SHARED, "shared_items": 0,
                    "runs": [{"run_id": r["run_id"], "recipe": r["recipe"], "items": n}
                             for r, n in zip(runs, counts, strict=True)],
                    "hint": "compare them on one held-out set: --on RUN or --on PATH"})
        return 1
    each = ", ".join(f"{r['run_id']} ({r['recipe']}) scored {n} items"
                     for r, n in zip(runs, counts, strict=True))
    print(f"datamill: nothing to compare: {each}; 0 items in common. These runs were "
          "evaluated on different held-out data (e.g. refresh runs, each scored on its own new "
          "documents), so no item can be paired. Compare them on one held-out set: "
          f"--on {runs[0]['run_id']} (that run's held-out documents) or --on PATH (a Parquet or "
          "JSONL file of documents).", file=sys.stderr)
    return 1


def _score_on(cat: Any, on: str, runs: dict[str, dict[str, Any]]
              ) -> tuple[dict[str, list[Path]], str]:
    """Each run's models scored on ``on`` (a run or a file): label -> scored folders, and
    what they were scored on."""
    from tasks.compare import heldout_of_file, heldout_of_run, score_on

    trains = {label: [Path(s["output_path"]) for s in run["stages"] if s["stage"] == "train"]
              for label, run in runs.items()}
    for label, dirs in trains.items():
        if not dirs:
            raise LookupError(f"run {runs[label]['run_id']} has no train stage: no model")
    work = cat.path.parent / "compare" / "on"
    if Path(on).is_file():
        # the file scored with the baseline run's settings and windows
        heldout = heldout_of_file(Path(on), heldout_of_run(cat, next(iter(runs.values()))[
            "run_id"]), work)
    else:
        heldout = heldout_of_run(cat, on)
    return score_on(trains, heldout, work), heldout.label


def cmd_ablation(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.recipe import RecipeError, load_recipe

    try:
        for r in args.recipes:
            load_recipe(r)
    except RecipeError as e:
        return fail(str(e))
    if len(args.recipes) < 2:
        return fail("an ablation needs at least two recipes (the first is the baseline)")
    from flows.ablation import ablation

    with engines():
        out = ablation(args.recipes, data_root=args.data_root, boot=args.boot,
                       min_snr=args.min_snr)
    if args.json:
        print_json(out)
        return 0
    print(f"ablation {out['ablation']}: baseline {out['baseline']}")
    for name, rid in out["runs"].items():
        print(f"  {name:<24} run {rid}  ({out['cached_stages'][name]} stages from cache)")
    print_decisions(out["rows"], out["snr"], True)
    print(f"report: {out['report']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """lm-evaluation-harness on a checkpoint; results go to the catalog's evals."""
    from infra.env import apply_defaults

    apply_defaults()
    from tasks import harness

    tasks = [t for t in args.harness.split(",") if t]
    target = Path(args.target)
    cat = catalog(args.data_root)
    if (target / "config.json").is_file():
        targets = [(None, None, target)]
    else:
        try:
            run = cat.show(args.target)
        except (FileNotFoundError, LookupError) as e:
            return fail(f"{args.target}: not a checkpoint folder, and {str(e).strip(chr(39))}",
                        1)
        targets = [(run["run_id"], s, Path(s["output_path"]) / "checkpoint")
                   for s in run["stages"] if s["stage"] == "train"]
        if not targets:
            return fail(f"run {run['run_id']} has no train stage", 1)
    if not harness.available():
        return fail("lm-evaluation-harness is not installed: pip install 'datamill[lmeval]'", 1)
    from tasks.train import resolve_device

    device = str(resolve_device(args.device))
    out = []
    for run_id, _stage, ckpt in targets:
        try:
            res = harness.run_harness(ckpt, tasks, [Path(p) for p in args.include],
                                      args.batch_size, device, args.limit, args.num_fewshot)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            return fail(str(e), 1)
        seed = _seed_of(ckpt)
        rows = [(harness.HARNESS_PREFIX + t, m, v) for t, ms in sorted(res["results"].items())
                for m, v in sorted(ms.items())]
        cat.record_evals(run_id, str(ckpt), rows, seed=seed)
        out.append({"run_id": run_id, "checkpoint": str(ckpt), "seed": seed,
                    "results": res["results"], "n_samples": res["n_samples"],
                    "lm_eval": res["lm_eval"]})
    if args.json:
        print_json(out)
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
