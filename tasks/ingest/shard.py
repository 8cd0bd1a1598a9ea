"""`ingest_file`: one input -> its kept / rejected / quarantine shards and stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.ingest.inputs import detect_format
from tasks.ingest.policy import decide
from tasks.ingest.readers import READERS
from tasks.ingest.records import ReadContext
from tasks.ingest.writer import ShardWriter


def ingest_file(
    path: str,
    file_key: str,
    out_dir: str,
    fmt: str,
    fields: dict[str, str],
    cfg: Any,
) -> dict[str, Any]:
    """Read one input into ``out_dir/{kept,rejected,quarantine}/part-<file_key>-*.parquet``.

    Returns the shard stats (counts, files written, documents kept per language, records
    skipped as not documents). Runs on a Dask worker or anywhere else.
    """
    p, out = Path(path), Path(out_dir)
    for sub in ("kept", "rejected", "quarantine"):  # a crashed earlier attempt: start clean
        for old in (out / sub).glob(f"part-{file_key}-*.parquet"):
            old.unlink()
    kind = detect_format(p, fmt)
    source = p.name if p.is_dir() else p.name.split(".")[0]
    ctx = ReadContext(p, fields, cfg, source)
    output = ShardWriter(out, file_key, cfg)
    for batch in READERS[kind](p, ctx):
        output.add(decide(batch, ctx))
    output.close()
    if output.n_quarantined:
        output.rejections["ingest.quarantine"] = {"first": output.n_quarantined,
                                                  "alone": output.n_quarantined}
    n_rej = output.n_rejected + output.n_quarantined
    return {
        "file": str(p),
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
