"""``datamill refresh`` and ``datamill promoted``: keep a recipe's model current."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli.common import DATA_ROOT_HELP, catalog, engines, fail, print_json, print_stages


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    rf.set_defaults(handler=cmd_refresh)

    pr = sub.add_parser("promoted", help="the promoted run and checkpoint of a recipe")
    pr.add_argument("recipe", help="recipe name (or a recipe YAML file)")
    pr.add_argument("--data-root", help=DATA_ROOT_HELP)
    pr.add_argument("--history", action="store_true", help="every decision, oldest first")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(handler=cmd_promoted)


def cmd_refresh(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.recipe import RecipeError, load_recipe

    try:
        load_recipe(args.recipe)
    except RecipeError as e:
        return fail(str(e))
    from flows.pipeline import new_run_id
    from flows.refresh import refresh

    with engines():
        out = refresh(args.recipe, data_root=args.data_root, run_id=new_run_id(),
                      require_better=args.require_better, lock_wait_s=args.lock_wait)
    if args.json:
        print_json(out)
        return 0
    if out["status"] == "skipped":
        print(f"run {out['run_id']}: skipped: {out['reason']}")
        return 0
    print_stages(out["stages"])
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
            return fail(str(e))
        name = recipe.name
        if args.data_root is None:
            from infra.env import data_root as resolve

            args.data_root = str(resolve(None, recipe.data_root))
    cat = catalog(args.data_root)
    if args.history:
        try:
            rows = cat.promotions(name)
        except FileNotFoundError as e:
            return fail(str(e), 1)
        if args.json:
            print_json(rows)
        for r in [] if args.json else rows:
            print(f"{r['decided_at']}  {r['run_id']}  "
                  f"{'PROMOTED' if r['promoted'] else 'kept old'}  {r['reason']}")
        return 0
    row = cat.promoted(name)
    if row is None:
        return fail(f"nothing promoted for recipe {name!r} in {cat.path}", 1)
    if args.json:
        print_json(row)
        return 0
    print(f"recipe {name}: promoted run {row['run_id']} ({row['decided_at']})")
    for c in row["checkpoints"]:
        print(f"checkpoint: {c}")
    print(f"why: {row['reason']}")
    return 0
