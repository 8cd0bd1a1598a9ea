"""The ingest stage's shards and its cross-input id step, as plain functions of a `StageDir` and
an `Executor` (so a benchmark or a notebook can drive them without the flow).

Each input is a shard keyed ``NNNNN`` (its position in the input list); a large JSONL input
is cut into ranges (``ranges.py``), shards keyed ``NNNNN.RRRR``, whose parts sort in the
input's order (``part-00000.0001-0000`` after ``part-00000.0000-0003``, before
``part-00001-0000``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tasks.ingest import ranges
from tasks.ingest.ids import dropped, forget, input_key, unique_ids
from tasks.ingest.shard import ingest_file

# plain inputs up to this many bytes (256 MiB) in all have their lines counted in this
# process: one read from the page cache (~2 GB/s) costs less than a round trip to the workers
# (~25 ms for 8 tiny tasks on 2 local workers); beyond it they are counted on the workers
LOCAL_COUNT_BYTES = 256 * 2**20


def shard_jobs(found: Sequence[Path], out_dir: str, fmt: str, fields: dict[str, str],
               cfg: Any, ex: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """One job per input, or per range of an input larger than ``cfg.shard_max_bytes`` that
    can be cut. Planning: a plain file's cuts here (a few small reads), the lines between
    them counted here (``LOCAL_COUNT_BYTES``) or on the workers, a range each; a zstd file's
    frames scanned on a worker."""
    range_bytes = int(cfg.shard_max_bytes)
    paths = [str(f.resolve()) for f in found]  # labels quarantine rows, seeds ids
    cuts: dict[int, list[int]] = {}
    todo: list[tuple[int, str, tuple[Any, ...]]] = []  # (input, task, args)
    counts: dict[int, list[int]] = {}
    budget = LOCAL_COUNT_BYTES
    for i, path in enumerate(paths):
        how = ranges.kind(path, fmt, range_bytes)
        if how == "zstd":
            todo.append((i, "zstd", (path, range_bytes)))
        elif how == "plain" and (c := ranges.plain_cuts(path, range_bytes)):
            cuts[i] = c
            between = list(zip(c, c[1:], strict=False))  # the last range's lines: not needed
            if c[-1] <= budget:
                budget -= c[-1]
                counts[i] = [ranges.count_lines(path, a, b) for a, b in between]
            else:
                todo += [(i, "count", (path, a, b)) for a, b in between]
    done = ex.map(_planning, [(task, args) for _, task, args in todo], "ingest ranges") \
        if todo else []
    parts: dict[int, list[dict[str, Any]] | None] = {}
    for (i, task, _), got in zip(todo, done, strict=True):
        if task == "zstd":
            parts[i] = got
        else:
            counts.setdefault(i, []).append(got)
    for i, c in cuts.items():
        parts[i] = ranges.plain_ranges(c, counts[i])
    jobs: list[tuple[str, tuple[Any, ...]]] = []
    for i, path in enumerate(paths):
        key = f"{i:05d}"
        planned = parts.get(i)
        if not planned:
            jobs.append((key, (path, key, out_dir, fmt, fields, cfg)))
            continue
        for r, part in enumerate(planned):
            rkey = f"{key}.{r:04d}"
            jobs.append((rkey, (path, rkey, out_dir, fmt, fields, cfg, part)))
    return jobs


def _planning(task: str, args: tuple[Any, ...]) -> Any:
    return ranges.count_lines(*args) if task == "count" else ranges.zstd_ranges(*args)


def run_shards(out: Any, ex: Any, jobs: list[tuple[str, tuple[Any, ...]]]
               ) -> tuple[list[dict[str, Any]], int]:
    """The shards (resumable by their markers), then ids made unique across inputs and
    repeated ones dropped within a split input: each shard's stats, net of the drops, and how
    many ids were renamed."""
    forget(out, [k for k, _ in jobs])
    stats = ex.shards(out, ingest_file, jobs, "ingest")
    groups: dict[str, list[str]] = {}
    for (k, _), s in zip(jobs, stats, strict=True):
        groups.setdefault(input_key(k), []).extend(s["kept"])
    split = len(groups) < len(jobs)
    step = unique_ids(out, ex, list(groups.items()), split)
    return account(out, jobs, stats), sum(int(r.get("renamed", 0)) for r in step)


def account(out: Any, jobs: list[tuple[str, tuple[Any, ...]]], stats: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """Shard stats with the rows the id step moved from a range's kept parts to its rejected
    ones (repeated ids of a split input) counted there."""
    res = []
    for (key, _), s in zip(jobs, stats, strict=True):
        n, langs = dropped(str(out.path), key) if "." in key else (0, {})
        if n:
            s = {**s, "docs_kept": s["docs_kept"] - n, "docs_rejected": s["docs_rejected"] + n}
            rej = {k: dict(v) for k, v in s.get("rejections", {}).items()}
            r = rej.setdefault("ingest.duplicate_id", {"first": 0, "alone": 0})
            r["first"] += n
            r["alone"] += n
            have = dict(s.get("langs", {}))
            for lang, c in langs.items():
                have[lang] = have.get(lang, 0) - c
            s["rejections"], s["langs"] = rej, {k: v for k, v in have.items() if v}
            # a part left without rows is not one of the stage's outputs
            s["kept"] = [k for k in s["kept"]
                         if pq.ParquetFile(Path(out.path) / k).metadata.num_rows]
        res.append(s)
    return res
