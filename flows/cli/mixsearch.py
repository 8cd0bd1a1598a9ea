"""``datamill mixsearch RECIPE --points N``: train N mixtures of a recipe's sources (a simplex
lattice or a seeded random sample), fit the static mixing law to their per-source held-out
bits per byte, and print the mixture it predicts to be best (flows/mixsearch.py)."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import fail, print_json


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"two or more distinct source names: {text!r}")
    return names


def _objective(text: str) -> dict[str, float]:
    out = {}
    for part in (p for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or out[name.strip()] < 0:
            raise argparse.ArgumentTypeError(f"SOURCE=WEIGHT pairs (weights >= 0): {text!r}")
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("mixsearch", help="train a grid or random sample of source mixtures "
                       "(shared stages run once), fit the static mixing law to their per-source "
                       "held-out losses and predict the best mixture")
    s.add_argument("recipe", metavar="RECIPE", help="the recipe YAML the mixtures vary")
    s.add_argument("--points", type=int, required=True, metavar="N",
                   help="mixtures to train (the law of m sources needs m + 2)")
    s.add_argument("--seeds", type=int, default=1, metavar="K", help="seeds per mixture "
                   "(their held-out losses are averaged; default 1)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--grid", dest="method", action="store_const", const="grid",
                     help="a simplex lattice (the coarsest with at least N points; default)")
    how.add_argument("--random", dest="method", action="store_const", const="random",
                     help="N mixtures drawn uniformly from the simplex (seeded)")
    s.add_argument("--sample-seed", type=int, default=0, help="seed of --random (default 0)")
    s.add_argument("--sources", type=_names, metavar="A,B,...", help="the sources to mix "
                   "(default: all of the data's); the others are not trained on")
    s.add_argument("--objective", type=_objective, metavar="A=W,...", help="weights of the "
                   "sources' losses in what the best mixture minimises (default: their mean)")
    s.add_argument("--data-root", help="default: $DATAMILL_DATA_ROOT, else the recipe's")
    s.add_argument("--json", action="store_true")
    s.set_defaults(handler=cmd_mixsearch, method="grid")


def print_search(out: dict[str, Any]) -> None:
    src = out["sources"]
    width = max(8, *(len(x) for x in src))
    print(f"mixsearch {out['search']}: {len(out['points'])} mixtures ({out['method']}) of "
          f"{', '.join(src)}, {out['seeds']} seed(s) each")
    print("\nproportions drawn, and held-out bits per byte per source:")
    print(f"{'point':>5}  {'run':<22} " + " ".join(f"{'p ' + x:>{width + 2}}" for x in src)
          + "  " + " ".join(f"{'bpb ' + x:>{width + 4}}" for x in src))
    for i, pt in enumerate(out["points"]):
        print(f"{i:>5}  {pt['run_id']:<22} "
              + " ".join(f"{v:>{width + 2}.3f}" for v in pt["proportions"]) + "  "
              + " ".join(f"{pt['bpb'].get(x, float('nan')):>{width + 4}.4f}" for x in src))
    fit = out["fit"]
    if "error" in fit:
        print(f"\nno mixing law fitted: {fit['error']}")
        return
    q = fit["quality"]
    print("\nmixing law L_i(p) = c_i + k_i exp(sum_j t_ij p_j), per source:")
    for x in src:
        par = fit["params"][x]
        loo = "" if q["loo_mae"] is None else f"  leave-one-out MAE {q['loo_mae'][x]:.4f}"
        print(f"  {x:<{width}}  c {par['c']:.4f}  k {par['k']:.4g}  t "
              + " ".join(f"{v:+.3f}" for v in par["t"].values())
              + f"  R2 {q['r2'][x]:.4f}{loo}")
    if q["loo_mae"] is None:
        print("  (leave-one-out needs one point more than the fit's minimum)")
    print("\npredicted best mixture (minimises " + " + ".join(
        f"{w:.3g}*{x}" for x, w in fit["objective"].items()) + "):")
    for x in src:
        print(f"  {x:<{width}}  {fit['best'][x]:.3f}  predicted bpb {fit['best_losses'][x]:.4f}"
              f"  source_weights {fit['best_source_weights'][x]:.4g}")
    print(f"  weighted loss {fit['best_loss']:.4f} (best trained point: "
          f"{fit['observed_best']})")


def cmd_mixsearch(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.recipe import RecipeError, load_recipe

    try:
        load_recipe(args.recipe)
    except RecipeError as e:
        return fail(str(e))
    if args.points < 1 or args.seeds < 1:
        return fail("--points and --seeds must be at least 1")
    from flows.cli.common import engines
    from flows.mixsearch import mixsearch

    with engines():
        try:
            out = mixsearch(args.recipe, args.points, seeds=args.seeds, method=args.method,
                            sources=args.sources, sample_seed=args.sample_seed,
                            objective=args.objective, data_root=args.data_root)
        except ValueError as e:
            return fail(str(e), 1)
    if args.json:
        print_json(out)
        return 0
    print_search(out)
    print(f"\nrecipes and result: {out['data_root']}/mixsearch/{out['search']}/")
    return 0
