"""``datamill runs`` and ``datamill show``: read the run catalog."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import DATA_ROOT_HELP, catalog, fail, print_json, print_stages

STAGE_KEYS = ["stage", "version", "docs_in", "docs_kept", "docs_rejected", "seconds",
              "output_path", "cached"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("runs", help="list runs, newest first")
    ls.add_argument("--data-root", help=DATA_ROOT_HELP)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_runs)

    sh = sub.add_parser("show", help="show one run: stages, counts, rejections by rule, "
                        "evaluation, tokens per source and language, epochs per source")
    sh.add_argument("run", help="a run id, or 'latest'")
    sh.add_argument("--data-root", help=DATA_ROOT_HELP)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(handler=cmd_show)


def cmd_runs(args: argparse.Namespace) -> int:
    try:
        runs = catalog(args.data_root).runs()
    except FileNotFoundError as e:
        return fail(str(e), 1)
    if args.json:
        print_json(runs)
        return 0
    for r in runs:
        print(f"{r['run_id']}  {r['status']:<10} {r['recipe']:<20} {r['started_at']}")
    return 0


def _composition(stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    from tasks.composition import composition

    try:
        return composition(stages)
    except (OSError, ValueError, KeyError):  # outputs deleted or from an older datamill
        return None


def cmd_show(args: argparse.Namespace) -> int:
    try:
        run = catalog(args.data_root).show(args.run)
    except (FileNotFoundError, LookupError) as e:
        return fail(str(e).strip("'\""), 1)
    comp = _composition(run["stages"])
    if args.json:
        print_json({"run_id": run["run_id"], "recipe": run["recipe"], "status": run["status"],
                    "started_at": run["started_at"], "finished_at": run["finished_at"],
                    "error": run["error"], "report": run["report"],
                    "stages": [{k: s[k] for k in STAGE_KEYS} for s in run["stages"]],
                    "rejections": run["rejections"], "evals": run["evals"],
                    "composition": comp})
        return 0
    print(f"run {run['run_id']}  recipe {run['recipe']}  status {run['status']}")
    print_stages(run["stages"])
    if run["rejections"]:
        print("\nrejections (dropped first / would drop alone):")
        for r in run["rejections"]:
            print(f"  {r['stage']:<8} {r['rule']:<40} {r['docs']:>7} {r['docs_alone']:>7}")
    if run["evals"]:
        print("\nevaluation:")
        for e in run["evals"]:
            print(f"  {e['task']:<40} {e['metric']:<6} {e['value']:.4f}")
    if comp:
        print_composition(comp)
    if run["error"]:
        print(f"\nerror: {run['error']}")
    print(f"\nreport: {run['report']}")
    return 0


def print_composition(comp: dict[str, Any]) -> None:
    """Tokens per source and per language at each stage (~: estimated from bytes), then the
    epochs training spent on each source."""
    rows = comp["stages"]
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    if rows:
        print("\ntokens per source and language (~ estimated from bytes, else measured):")
        for by in ("source", "lang"):
            table: dict[str, dict[str, dict[str, Any]]] = {}
            for r in rows:
                if r["by"] == by:
                    table.setdefault(r["key"], {})[r["stage"]] = r
            w = max([24, *(len(k) for k in table)])
            print(f"  {by:<{w}} " + " ".join(f"{s:>13}" for s in stages))
            for key, cells in table.items():
                print(f"  {key or '(none)':<{w}} "
                      + " ".join(f"{_tokens(cells.get(s)):>13}" for s in stages))
    for seed in sorted({r["seed"] for r in comp["training"]}):
        print(f"\ntraining (seed {seed}): tokens seen / packed for training = epochs")
        for r in comp["training"]:
            if r["seed"] == seed:
                epochs = "-" if r["epochs"] is None else f"{r['epochs']:.2f}"
                print(f"  {r['source']:<32} {r['tokens_seen']:>12,} / "
                      f"{r['tokens_available']:>12,} = {epochs}")


def _tokens(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if row["tokens"] is None:
        return "?"
    return ("" if row["tokens_basis"] == "measured" else "~") + f"{row['tokens']:,}"
