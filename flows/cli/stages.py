"""``datamill stages``: the stage list from the contract (tasks/stage.py, tasks/stages/) —
each stage's inputs, outputs, kinds of work, resources and the recipe key configuring it."""

from __future__ import annotations

import argparse

from flows.cli.common import fail, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("stages", help="list the stages: inputs, outputs, resources, recipe key")
    s.add_argument("recipe", nargs="?", help="a recipe: its stages, with its own (stages.extra)")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(handler=cmd_stages)


def cmd_stages(args: argparse.Namespace) -> int:
    from tasks.recipe import RecipeError, load_recipe
    from tasks.stages import describe

    try:
        rows = describe(load_recipe(args.recipe) if args.recipe else None)
    except (RecipeError, ValueError) as e:
        return fail(str(e))
    if args.json:
        print_json(rows)
        return 0
    width = max(len(r["stage"]) for r in rows)
    for r in rows:
        until = "" if r["until"] == r["stage"] else f" (part of {r['until']})"
        print(f"{r['stage']:<{width}}  v{r['code_version']}{until}: {r['description']}")
        print(f"{'':<{width}}  recipe: {r['recipe_key']}; work: {', '.join(r['work'])}; "
              f"resources: {r['resources']}")
        print(f"{'':<{width}}  in: {', '.join(r['inputs'])} -> out: {', '.join(r['outputs'])}")
    return 0
