"""``datamill sweep RUN --score COL --keep 5,10,20``: what keeping the top k % of a stored
score would keep, per source, for several k at once — read from the run's filter outputs,
nothing scored again (tasks/select/sweep.py)."""

from __future__ import annotations

import argparse

from flows.cli.common import DATA_ROOT_HELP, catalog, fail, print_json


def _keeps(text: str) -> list[float]:
    try:
        keeps = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of percents: {text!r}") from None
    if not keeps or any(not 0 < k <= 100 for k in keeps):
        raise argparse.ArgumentTypeError(f"each keep setting is a percent in (0, 100]: {text!r}")
    return keeps


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="kept documents and bytes per source for several top-k %% "
                       "settings of a stored score (no re-scoring)")
    s.add_argument("run", help="a run id, or 'latest'")
    s.add_argument("--score", required=True, help="a score column of the run, e.g. "
                   "dclm_fasttext_score or dsir_score")
    s.add_argument("--keep", type=_keeps, default=[5.0, 10.0, 20.0],
                   help="percents to keep, comma-separated (default 5,10,20)")
    s.add_argument("--among", choices=["passing", "all", "kept"], default="passing",
                   help="the pool: documents no document rule rejected (default), every "
                   "document, or those the run kept")
    s.add_argument("--ascending", action="store_true", help="lower scores are better")
    s.add_argument("--data-root", help=DATA_ROOT_HELP)
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from infra.env import data_root
    from tasks.select.sweep import filter_manifest, read_pool, sweep

    root = data_root(args.data_root)
    try:
        manifest = filter_manifest(root, catalog(args.data_root), args.run)
        pool = read_pool(root, manifest, args.score, args.among)
    except (FileNotFoundError, LookupError, ValueError) as e:
        return fail(str(e).strip("'\""), 1)
    rows = sweep(pool, args.keep, args.ascending)
    if args.json:
        print_json({"run_id": manifest["run_id"], "filter_version": manifest["version"],
                    "score": args.score, "among": args.among, "unscored": pool.unscored,
                    "settings": rows})
        return 0
    print(f"run {manifest['run_id']}  filter {manifest['version']}  score {args.score}  "
          f"among {args.among}: {len(pool.score)} documents with a score"
          + (f" ({pool.unscored} without)" if pool.unscored else ""))
    for r in rows:
        share = r["bytes"] / r["pool_bytes"] if r["pool_bytes"] else 0.0
        cut = "" if r["cut"] is None else f", score {'<=' if args.ascending else '>='} " \
            f"{r['cut']:.6g}"
        print(f"\nkeep {r['keep_percent']:g} %: {r['docs']} documents, {r['bytes']:,} bytes "
              f"({share:.1%} of the pool's){cut}")
        width = max([len(s["source"]) for s in r["sources"]] + [6])
        print(f"  {'source':<{width}}  {'docs':>7}  {'of':>7}  {'bytes share':>11}  "
              f"{'in pool':>8}")
        for s in r["sources"]:
            print(f"  {s['source']:<{width}}  {s['docs']:>7}  {s['pool_docs']:>7}  "
                  f"{s['byte_share']:>11.1%}  {s['pool_byte_share']:>8.1%}")
    return 0
