"""`ingest_file`: one input -> its kept / rejected / quarantine shards and stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.ingest.inputs import InputError, detect_format
from tasks.ingest.policy import Decided, decide_safely
from tasks.ingest.readers import READERS
from tasks.ingest.records import Batch, ReadContext, qrow
from tasks.ingest.writer import ShardWriter


def ingest_file(
    path: str,
    file_key: str,
    out_dir: str,
    fmt: str,
    fields: dict[str, str],
    cfg: Any,
    part: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read one input (or, with `part`, one byte range of a JSONL input: ``ranges.py``) into
    ``out_dir/{kept,rejected,quarantine}/part-<file_key>-*.parquet``.

    Returns the shard stats (counts, files written, documents kept per language, records
    skipped as not documents). Runs on a Dask worker or anywhere else.
    """
    p, out = Path(path), Path(out_dir)
    for sub in ("kept", "rejected", "quarantine", "ids"):  # a crashed earlier attempt
        for old in (out / sub).glob(f"part-{file_key}-*.parquet"):
            old.unlink()
    source = p.name if p.is_dir() else p.name.split(".")[0]
    ctx = ReadContext(p, fields, cfg, source, part)
    output = ShardWriter(out, file_key, cfg)
    try:
        kind = "jsonl" if part else detect_format(p, fmt)
        batches = READERS[kind](p, ctx)
    except InputError as e:  # a file a glob matched that no reader knows: counted, not fatal
        kind, batches = "unknown", iter([Batch(quarantine=[qrow(ctx.label, None, None,
                                                                str(e), None)])])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001 - a reader's unforeseen failure: what it read
            # is kept, the rest of the input is one quarantine row (where it stopped is the
            # reader's to know; a reader that can say so does it itself)
            output.add(Decided(None, [], [qrow(
                ctx.label, None, None, f"reading stopped, rest of the input not read: "
                f"{type(e).__name__}: {str(e)[:300]}", None)]))
            break
        output.add(decide_safely(batch, ctx))
    output.close()
    if output.n_quarantined:
        output.rejections["ingest.quarantine"] = {"first": output.n_quarantined,
                                                  "alone": output.n_quarantined}
    n_rej = output.n_rejected + output.n_quarantined
    return {
        "file": ctx.label,
        "format": kind,
        "docs_in": output.n_kept + n_rej,
        "docs_kept": output.n_kept,
        "docs_rejected": n_rej,
        "quarantined": output.n_quarantined,
        "rejections": output.rejections,
        "kept": [f"kept/{f}" for f in output.kept_files],
        "langs": dict(sorted(output.langs.items())),
        "skipped": dict(sorted(ctx.skipped.items())),
    }
