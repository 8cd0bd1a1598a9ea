"""Document ids, unique per stage by construction.

Within one input, a repeated id is rejected (``ingest.duplicate_id``, the first kept): `IdSet`
remembers the kept ids' 64-bit hashes in sorted NumPy arrays, about 8 bytes per kept document
(16 for a moment while two arrays are merged), not a Python set (~70 bytes per id).

Across inputs, two dumps that both number their ids from 0 are both kept: after the per-input
shards, `decide_ids` gathers every kept row's id hash (written beside each kept part, under
``ids/``), and a row whose id an earlier row already has (in shard order, then row order) gets
a new id, ``<id>#<shard key>`` (``-2``, ``-3``... appended in the unlikely case that is taken
too); its original id goes to ``meta`` as ``ingest_original_id``. `rename_shard` rewrites only
the kept parts holding such rows. Decisions are written before any part is rewritten, and a
rewrite sets values from the decision (never from what the part holds), so a killed run that
is re-run gives the same output. A single input renames nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from tasks.store import atomic_write_json, write_parquet

ORIGINAL_KEY = "ingest_original_id"


def id_hash(rid: str) -> int:
    """The 64-bit hash of an id (a lone surrogate hashes too; it is quarantined later)."""
    return xxhash.xxh64_intdigest(rid.encode("utf-8", "surrogatepass"))


def id_hashes(ids: Iterable[Any]) -> np.ndarray:
    return np.fromiter((id_hash(str(i)) for i in ids), np.uint64)


class IdSet:
    """A set of 64-bit hashes as sorted NumPy arrays of growing sizes (a log-structured merge:
    a new run is merged with the last one while that is at most twice its size, so there are
    ~log2(n) runs and each key is merged ~log2(n) times, each merge of two sorted runs linear).
    8 bytes per key, twice that for the moment of a merge."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        out = np.zeros(len(keys), bool)
        for run in self.runs:
            i = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            out |= run[i] == keys
        return out

    def add(self, keys: np.ndarray) -> None:
        run = np.unique(keys.astype(np.uint64))
        run = run[~self.contains(run)]
        if not len(run):
            return
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")
        self.runs.append(run)


def repeated(keys: np.ndarray, seen: IdSet) -> np.ndarray:
    """Which keys are repeats: already in `seen`, or an earlier key of the same batch."""
    dup = seen.contains(keys)
    first = np.zeros(len(keys), bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return dup | ~first


def write_keys(ids: pa.ChunkedArray | pa.Array, path: Path) -> None:
    """A kept part's id hashes and ids as read, in row order: what `decide_ids` gathers (the
    ids themselves are read only for the rows it renames; the part's own may be renamed)."""
    write_parquet(pa.table({"h": pa.array(id_hashes(ids.to_pylist()), pa.uint64()),
                            "id": ids}), path)


def decide_ids(out_dir: str, shards: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """Over every shard's kept parts (``[(shard key, [kept/part-...parquet, ...])]`` in shard
    order): the rows whose id an earlier row has, with their new ids, written per shard to
    ``ids/renames/<key>.parquet``. Runs in one task; holds ~24 bytes per kept document (and
    a Python int per renamed one)."""
    out = Path(out_dir)
    shutil.rmtree(out / "ids" / "renames", ignore_errors=True)  # an interrupted attempt's
    parts = [(key, rel) for key, rels in shards for rel in rels]
    keys = [pq.read_table(_keys(out, rel), columns=["h"]).column("h").to_numpy()
            for _, rel in parts]
    if not keys:
        return {"renamed": 0, "shards": {}}
    starts = np.cumsum([0] + [len(k) for k in keys])
    allh = np.concatenate(keys)
    del keys
    order = np.argsort(allh, kind="stable")  # equal hashes stay in shard, then row order
    ordered = allh[order]
    later = np.sort(order[1:][ordered[1:] == ordered[:-1]])
    del order
    given: set[int] = set()  # hashes of the new ids handed out

    def free(rid: str) -> bool:
        h = id_hash(rid)
        i = int(np.searchsorted(ordered, np.uint64(h)))
        return not (i < len(ordered) and int(ordered[i]) == h) and h not in given

    owner = np.searchsorted(starts, later, side="right") - 1  # sorted, as `later` is
    renames: dict[str, dict[str, list[Any]]] = {}
    found, first = np.unique(owner, return_index=True)
    bounds = np.r_[first, len(owner)].tolist()
    for p, lo, hi in zip(found.tolist(), bounds[:-1], bounds[1:], strict=True):
        key, rel = parts[p]
        rows = (later[lo:hi] - starts[p]).tolist()
        ids = pq.read_table(_keys(out, rel), columns=["id"]).column("id").take(rows).to_pylist()
        got = renames.setdefault(key, {"part": [], "row": [], "id": [], "original": []})
        for row, rid in zip(rows, ids, strict=True):
            new, n = f"{rid}#{key}", 1
            while not free(new):
                n += 1
                new = f"{rid}#{key}-{n}"
            given.add(id_hash(new))
            for col, v in (("part", rel), ("row", row), ("id", new), ("original", rid)):
                got[col].append(v)
    for key, cols in renames.items():
        write_parquet(pa.table(cols), out / "ids" / "renames" / f"{key}.parquet")
    return {"renamed": int(len(later)), "shards": {k: len(v["row"]) for k, v in renames.items()}}


def _keys(out: Path, kept_rel: str) -> Path:
    return out / "ids" / Path(kept_rel).name


def rename_shard(out_dir: str, key: str) -> dict[str, Any]:
    """Apply shard `key`'s renames to its kept parts (each rewritten atomically, same row
    groups); idempotent."""
    out = Path(out_dir)
    dec = pq.read_table(out / "ids" / "renames" / f"{key}.parquet").to_pydict()
    by_part: dict[str, dict[int, tuple[str, str]]] = {}
    for rel, row, new, orig in zip(dec["part"], dec["row"], dec["id"], dec["original"],
                                   strict=True):
        by_part.setdefault(rel, {})[row] = (new, orig)
    for rel, rows in by_part.items():
        path = out / rel
        pf = pq.ParquetFile(path)
        group_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else None
        t = pf.read()
        ids, metas = t.column("id").to_pylist(), t.column("meta").to_pylist()
        for row, (new, orig) in rows.items():
            meta = json.loads(metas[row]) if metas[row] else {}
            meta[ORIGINAL_KEY] = orig
            ids[row], metas[row] = new, json.dumps(meta, ensure_ascii=False, default=str)
        t = t.set_column(t.schema.get_field_index("id"), t.schema.field("id"),
                         pa.array(ids, pa.string()))
        t = t.set_column(t.schema.get_field_index("meta"), t.schema.field("meta"),
                         pa.array(metas, pa.string()))
        write_parquet(t, path, row_group_rows=group_rows)
    return {"renamed": len(dec["row"])}


def forget(out: Any, keys: list[str]) -> None:
    """Before the per-input shards run: a shard about to be (re)ingested has its original ids
    again, so the id decision is taken anew and its renames redone (`out` a StageDir)."""
    redo = [k for k in keys if out.shard_done(k) is None]
    for k in redo:
        out.shard_marker(f"ids-{k}").unlink(missing_ok=True)
    if redo:
        (out.path / "ids" / "decided.json").unlink(missing_ok=True)


def make_unique(out: Any, ex: Any, shards: list[tuple[str, list[str]]]) -> int:
    """The cross-input step of the ingest stage (`out` a StageDir, `ex` its Executor):
    decide once (a marker holds the decision), then rename per shard (resumable by the
    executor's per-shard markers). Returns how many ids were renamed."""
    if len(shards) < 2:
        return 0
    marker = out.path / "ids" / "decided.json"
    if marker.is_file():
        decided = json.loads(marker.read_text())
    else:
        decided = ex.task(decide_ids, str(out.path), shards, desc="ingest ids")
        atomic_write_json(marker, decided)
    jobs = [(f"ids-{k}", (str(out.path), k)) for k in sorted(decided["shards"])]
    if jobs:
        ex.shards(out, rename_shard, jobs, "ingest ids")
    return int(decided["renamed"])
