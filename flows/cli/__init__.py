"""The ``datamill`` command. Heavy libraries (prefect, torch, ray, dask) are imported only by
the handlers that need them, so ``datamill --help`` answers at once.

Each subcommand group is one module with ``add_parser(subparsers)``, which registers its
parsers and sets ``handler`` on each; ``main`` calls the chosen one."""

from __future__ import annotations

import argparse

from flows.cli import catalog_cmds, decide, export, inspect, llm, refresh, run, server, stages
from flows.cli import contamination as contamination_cmd
from flows.cli import mixsearch as mixsearch_cmd
from flows.cli import sweep as sweep_cmd
from flows.cli.common import EXIT_USAGE

__all__ = ["EXIT_USAGE", "SUBCOMMANDS", "main"]

# The subcommand modules, in the order `datamill --help` lists them. A new subcommand is one
# module with add_parser(subparsers) plus one entry here.
SUBCOMMANDS = [run, stages, catalog_cmds, inspect, decide, export, refresh, server, llm,
               sweep_cmd, contamination_cmd, mixsearch_cmd]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datamill",
        description="Curate LM training data, train proxy models on it, and tell whether a "
        "data change made the model better.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)

