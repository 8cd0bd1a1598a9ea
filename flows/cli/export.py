"""``datamill export``: a completed run's data as a Hugging Face dataset (Parquet), JSONL,
Megatron-LM's indexed dataset or nanotron's (datatrove's) tokenized files."""

from __future__ import annotations

import argparse
import re

from flows.cli.common import DATA_ROOT_HELP, catalog, fail, print_json

FORMATS = ["parquet", "jsonl", "megatron", "nanotron"]  # tasks.export.FORMATS (not imported:
# `datamill --help` stays light)


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def _size(text: str) -> int:
    """``256MiB``, ``1GB``, ``500000`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if m is None or m[2] not in _UNITS:
        raise ValueError(text)
    return int(float(m[1]) * _UNITS[m[2]])


def _bytes_arg(text: str) -> int:
    try:
        n = _size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 1GB)") from None
    if n <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a run's data: Hugging Face dataset (Parquet), "
                        "JSONL, Megatron-LM or nanotron tokens")
    ex.add_argument("run", help="a run id, or 'latest'")
    ex.add_argument("--to", required=True, metavar="DIR", help="the export folder (replaced "
                    "atomically; an identical export already there is left as it is)")
    ex.add_argument("--format", default="parquet", choices=FORMATS)
    ex.add_argument("--split", choices=["all", "train"], default=None,
                    help="all kept documents, or the training split (without the run's "
                    "held-out documents); default: all for parquet/jsonl, train for "
                    "megatron/nanotron")
    ex.add_argument("--compression", choices=["none", "gzip", "zstd"], default=None,
                    help="jsonl only; default: from the --to suffix (.gz, .zst), else none")
    ex.add_argument("--shard-size", type=_bytes_arg, default=256 * 2**20, metavar="SIZE",
                    help="largest shard, uncompressed (parquet, jsonl, nanotron); "
                    "default 256MiB")
    ex.add_argument("--shard-rows", type=int, default=None, metavar="N",
                    help="most documents per shard (parquet, jsonl)")
    ex.add_argument("--data-root", help=DATA_ROOT_HELP)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from tasks.export import ExportError, export_run

    if args.shard_rows is not None and args.shard_rows <= 0:
        return fail("--shard-rows must be positive")
    try:
        out = export_run(catalog(args.data_root), args.run, args.to, args.format,
                         split=args.split, max_shard_bytes=args.shard_size,
                         max_shard_rows=args.shard_rows, compression=args.compression)
    except (ExportError, FileNotFoundError) as e:
        return fail(str(e), 1)
    if args.json:
        print_json(out)
        return 0
    tokens = f", {out['tokens']:,} tokens" if out["tokens"] is not None else ""
    if out["status"] == "up to date":
        print(f"up to date: {out['to']} already holds run {out['run_id']} as {out['format']} "
              f"(export {out['hash']}); nothing written")
    else:
        print(f"exported run {out['run_id']} as {out['format']}: {out['docs']:,} documents"
              f"{tokens}, {out['files']} files in {out['seconds']:.1f}s -> {out['to']} "
              f"(export {out['hash']})")
    return 0
