"""``datamill inspect RUN``: what the filter dropped and kept, rule by rule (tasks/inspect.py),
as rich tables in the terminal or as JSON."""

from __future__ import annotations

import argparse
from typing import Any

from flows.cli.common import DATA_ROOT_HELP, catalog, fail, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="per filter rule: dropped documents and the kept ones "
                       "nearest its threshold")
    p.add_argument("run", help="a run id, or 'latest'")
    p.add_argument("--rule", action="append", help="a rule (gopher_quality.min_words) or a "
                   "filter's rules (gopher_quality); repeatable; default: every rule")
    p.add_argument("--source", help="only documents of this source")
    p.add_argument("--lang", help="only documents of this language (en also matches en-US)")
    p.add_argument("-n", type=int, default=5, help="documents per rule and list (default 5)")
    p.add_argument("--random-kept", type=int, default=0, metavar="N",
                   help="also N kept documents drawn at random (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--chars", type=int, default=300, help="excerpt length (default 300)")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--json", action="store_true", help="print strict JSON (null, never NaN)")
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from infra.env import data_root as resolve
    from tasks.inspect import inspect_run

    if args.n < 0 or args.random_kept < 0 or args.chars < 1:
        return fail("-n and --random-kept must be >= 0, --chars >= 1")
    try:
        run = catalog(args.data_root).show(args.run)
        out = inspect_run(run, resolve(args.data_root), rules=args.rule, source=args.source,
                          lang=args.lang, n=args.n, random_kept=args.random_kept,
                          seed=args.seed, chars=args.chars)
    except ValueError as e:
        return fail(str(e))
    except (FileNotFoundError, LookupError) as e:
        return fail(str(e).strip("'\""), 1)
    if args.json:
        print_json(out)
        return 0
    render(out)
    return 0


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def render(out: dict[str, Any], console: Any = None) -> None:
    """The inspection as rich tables. Every data value goes in as Text (never markup) and
    was stripped of control characters (tasks/inspect.py clean / excerpt)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tasks.inspect import clean

    con = console or Console(highlight=False)
    con.print(Text(f"run {clean(out['run_id'])} · filter {clean(out['version'])}: "
                   f"{out['docs_in']} in, {out['docs_kept']} kept, {out['docs_rejected']} "
                   "rejected", style="bold"))
    opts = out["options"]
    only = [f"{k} {clean(opts[k])}" for k in ("source", "lang") if opts.get(k) is not None]
    if only:
        con.print(Text("only documents with " + ", ".join(only)))

    def table(title: str, docs: list[dict[str, Any]]) -> Table:
        t = Table(title=Text(title), title_justify="left", expand=True, show_lines=True)
        t.add_column("document", ratio=2, overflow="fold")
        t.add_column("excerpt", ratio=5)
        for d in docs:
            meta = [clean(d["id"]), f"{clean(d['source'])} · {clean(d['lang'])}"]
            if "score" in d:
                meta.append(f"score {_num(d['score'])} · threshold {_num(d['threshold'])}")
            if "twin_id" in d:
                meta.append(f"kept twin: {clean(d['twin_id']) if d['twin_id'] else 'n/a'}")
            t.add_row(Text("\n".join(meta)), Text(d["excerpt"]))
        return t

    for r in out["rules"]:
        con.print()
        head = (f"{clean(r['rule'])} ({r['kind']}): dropped first {r['dropped_first']}"
                + (f", {r['matching']} of them matching" if only else ""))
        if r["score_column"]:
            head += (f" · score {clean(r['score_column'])}, threshold "
                     + (" / ".join(_num(t) for t in r["thresholds"]) or "n/a"))
        con.print(Text(head, style="bold cyan"))
        if r["note"]:
            con.print(Text(r["note"], style="dim"))
        if r["dropped"]:
            con.print(table("dropped", r["dropped"]))
        else:
            con.print(Text("dropped: none"))
        if r["nearest_kept"] is None:
            con.print(Text("kept nearest the threshold: n/a"))
        elif r["nearest_kept"]:
            con.print(table("kept, nearest the threshold", r["nearest_kept"]))
        else:
            con.print(Text("kept nearest the threshold: none with a score"))
    if out["random_kept"]:
        con.print()
        con.print(table(f"kept, {len(out['random_kept'])} at random (seed {opts['seed']})",
                        out["random_kept"]))
