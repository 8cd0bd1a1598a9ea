"""``datamill runs`` and ``datamill show``: read the run catalog."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import DATA_ROOT_HELP, catalog, fail, print_stages

STAGE_KEYS = ["stage", "version", "docs_in", "docs_kept", "docs_rejected", "seconds",
              "output_path"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    ls = sub.add_parser("runs", help="list runs, newest first")
    ls.add_argument("--data-root", help=DATA_ROOT_HELP)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_runs)

    sh = sub.add_parser("show", help="show one run's stages and counts")
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
        print(json.dumps(runs, default=str, indent=2))
        return 0
    for r in runs:
        print(f"{r['run_id']}  {r['status']:<10} {r['recipe']:<20} {r['started_at']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        run = catalog(args.data_root).show(args.run)
    except (FileNotFoundError, LookupError) as e:
        return fail(str(e).strip("'\""), 1)
    out = {"run_id": run["run_id"], "status": run["status"], "report": run["report"],
           "stages": [{k: s[k] for k in STAGE_KEYS} for s in run["stages"]]}
    if args.json:
        print(json.dumps(out, default=str, indent=2))
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
    if run["error"]:
        print(f"\nerror: {run['error']}")
    print(f"\nreport: {run['report']}")
    return 0
