"""``datamill run`` and ``datamill validate``: a recipe through the pipeline, or just checked."""

from __future__ import annotations

import argparse
import sys

from flows.cli.common import engines, fail, print_json, print_stages


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run a recipe: ingest -> rewrite -> filter -> tokenize -> "
                       "train -> evaluate")
    r.add_argument("recipe", help="recipe YAML file")
    # checked against the recipe's own list (tasks/stages/, plus its stages.extra)
    r.add_argument("--until", metavar="STAGE", help="stop after this stage (`datamill stages` "
                   "lists them: ingest, rewrite, filter, tokenize, train, evaluate, and a "
                   "recipe's own)")
    r.add_argument("--data-root", help="where outputs and the catalog live "
                   "(default: $DATAMILL_DATA_ROOT, else the recipe's data_root)")
    r.add_argument("--json", action="store_true", help="print the run summary as JSON")
    r.set_defaults(handler=cmd_run)

    v = sub.add_parser("validate", help="check a recipe and print it with defaults filled in")
    v.add_argument("recipe")
    v.set_defaults(handler=cmd_validate)


def cmd_run(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.ingest import InputError, expand_inputs
    from tasks.recipe import RecipeError, load_recipe
    from tasks.stages import until_names

    try:  # fail fast, before any engine starts, on a bad recipe, input or stage name
        recipe = load_recipe(args.recipe)
        expand_inputs(recipe.input.paths)
        names = until_names(recipe)
    except (RecipeError, InputError) as e:
        return fail(str(e))
    if args.until is not None and args.until not in names:
        return fail(f"--until: {args.until!r} is not a stage of this recipe; one of {names}")

    from flows.pipeline import new_run_id, run_recipe

    run_id = new_run_id()
    print(f"datamill: run {run_id} of recipe {recipe.name!r}", file=sys.stderr)
    with engines():
        summary = run_recipe(args.recipe, until=args.until, data_root=args.data_root,
                             run_id=run_id)
    if args.json:
        print_json(summary)
    else:
        print_stages(summary["stages"])
        print(f"\nrun {summary['run_id']}: {summary['status']}")
        print(f"report: {summary['report']}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import yaml

    from tasks.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        return fail(str(e))
    print(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    return 0
