"""``datamill contamination RUN``: which evaluation items the run's training text contains
(word n-gram overlap) and which its proxy scores like text it has seen (Min-K% Prob), per task
(tasks/decontam/audit.py). Rich tables, or strict JSON with ``--json``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli.common import DATA_ROOT_HELP, catalog, fail, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("contamination", help="evaluation items found in a run's training "
                       "text (n-gram overlap) and Min-K%% Prob under its proxy, per task")
    p.add_argument("run", help="a run id, or 'latest'")
    p.add_argument("--eval", action="append", default=[], metavar="FILE",
                   help="evaluation items: JSONL or text (one item per line); repeatable")
    p.add_argument("--field", action="append", metavar="NAME",
                   help="JSONL fields joined into an item's text (default: text); repeatable")
    p.add_argument("--harness", action="append", default=[], metavar="TASK",
                   help="an lm-evaluation-harness task that loads offline; repeatable")
    p.add_argument("--include", action="append", default=[], metavar="DIR",
                   help="a folder of harness task YAML; repeatable")
    p.add_argument("--ngram", type=int, default=13, help="words per n-gram (default 13)")
    p.add_argument("--k", type=float, default=20.0, help="Min-K%%: percent of lowest-"
                   "probability tokens averaged (default 20)")
    p.add_argument("--fpr", type=float, default=0.05, help="Min-K%%: share of the unseen "
                   "reference above the threshold (default 0.05)")
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="known-unseen text for the threshold (default: the run's held-out "
                   "documents the evaluation does not score)")
    p.add_argument("--checkpoint", help="score with this checkpoint instead of the run's")
    p.add_argument("--max-items", type=int, default=200, help="Min-K%%: items per task")
    p.add_argument("--no-mink", action="store_true", help="only the n-gram report")
    p.add_argument("--device", default="auto", help="torch device for Min-K%% (auto)")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--json", action="store_true", help="print strict JSON (null, never NaN)")
    p.set_defaults(handler=cmd_contamination)


def cmd_contamination(args: argparse.Namespace) -> int:
    from infra.env import data_root as resolve
    from tasks.decontam.audit import contamination

    if args.ngram < 1 or not 0 < args.k <= 100 or not 0 < args.fpr < 1 or args.max_items < 1:
        return fail("--ngram and --max-items must be >= 1, --k in (0, 100], --fpr in (0, 1)")
    try:
        cat = catalog(args.data_root)
        run = cat.show(args.run)
        out = contamination(
            resolve(args.data_root), run, cat.run_config(run["run_id"]), paths=args.eval,
            fields=args.field or ["text"], harness=args.harness, include=args.include,
            n=args.ngram, k=args.k, fpr=args.fpr, mink=not args.no_mink,
            reference=args.reference,
            checkpoint=Path(args.checkpoint) if args.checkpoint else None,
            max_items=args.max_items, device=args.device)
    except ValueError as e:
        return fail(str(e))
    except (FileNotFoundError, LookupError, RuntimeError) as e:
        return fail(str(e).strip("'\""), 1)
    if args.json:
        print_json(out)
        return 0
    render(out)
    return 0


def _num(v: Any, fmt: str = ".4g") -> str:
    return "n/a" if v is None or v != v else format(v, fmt) if isinstance(v, float) else str(v)


def _by(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"


def render(out: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    ng = out["ngram"]
    how = (f"stored by the decontaminate stage ({ng.get('stored')})" if ng["mode"] == "stage"
           else f"audit of the {ng.get('documents_stage')} documents, nothing changed")
    t = Table(title=f"run {out['run_id']}: {ng['n']}-gram overlap — {how}; "
              f"{ng['scanned_docs']} training documents scanned")
    for col in ("task", "items", "checked", "contaminated", "by item source",
                "mean overlap", "docs affected", "by document source"):
        t.add_column(col, justify="left" if "source" in col or col == "task" else "right",
                     no_wrap=col == "task")
    for task, r in ng["tasks"].items():
        t.add_row(Text(task), str(r["items"]), str(r["items_checked"]),
                  str(r["items_contaminated"]), Text(_by(r["contaminated_by_source"])),
                  _num(r["mean_overlap"], ".2f"), str(r["docs_affected"]),
                  Text(_by(r["docs_affected_by_source"])))
    console.print(t)
    mk = out.get("mink")
    if mk is None:
        console.print(Text(f"Min-K% Prob: {out.get('mink_unavailable', 'not computed')}"))
        return
    t = Table(title=f"Min-K% Prob, k = {mk['k']:g} %, threshold = the {1 - mk['fpr']:.0%} "
              f"quantile of {mk['reference']} ({mk['reference_docs']} documents)")
    for col in ("task", "items", "words", "median", "reference median", "threshold",
                "flagged", "share", "AUC vs reference"):
        t.add_column(col, justify="left" if col == "task" else "right")
    for task, r in mk["tasks"].items():
        t.add_row(Text(task), str(r["items"]), str(r["words_median"]),
                  _num(r["items_quantiles"]["p50"]), _num(r["reference_quantiles"]["p50"]),
                  _num(r["threshold"]), str(r["flagged"]), _num(r["flagged_share"], ".1%"),
                  _num(r["auc_vs_reference"], ".3f"))
    console.print(t)
