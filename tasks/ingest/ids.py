"""Document ids, unique per stage by construction.

Within one input, a repeated id is rejected (``ingest.duplicate_id``, the first kept): `IdSet`
remembers the kept ids' 64-bit hashes in sorted NumPy arrays, about 8 bytes per kept document
(16 for a moment while two arrays are merged), not a Python set (~70 bytes per id).

Across inputs, two dumps that both number their ids from 0 are both kept: after the per-input
shards, `decide_ids` gathers every kept row's id hash (written beside each kept part, under
``ids/``), and a row whose id an earlier row already has (in input order, then row order) gets
a new id, ``<id>#<input key>`` (``-2``, ``-3``... appended in the unlikely case that is taken
too); its original id goes to ``meta`` as ``ingest_original_id``. An input read in several
ranges (``ranges.py``) is one input here: a row whose id an earlier range of it already kept
is moved to the rejected documents as ``ingest.duplicate_id``, as a read of the whole input
would have rejected it, so ids are those of the unsplit run. `rename_shard` rewrites only the
kept parts holding such rows. Decisions are written before any part is rewritten, and a
rewrite sets values from the decision (never from what the part holds; a part is cut once),
so a killed run that is re-run gives the same output. A single input read whole renames
nothing.
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

from tasks.schema import with_reject
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


def write_keys(ids: pa.ChunkedArray | pa.Array, path: Path, hashes: np.ndarray | None = None
               ) -> None:
    """A kept part's id hashes (`hashes`, or computed) and ids as read, in row order: what
    `decide_ids` gathers (the ids themselves are read only for the rows it renames; the
    part's own may be renamed)."""
    h = id_hashes(ids.to_pylist()) if hashes is None else hashes
    write_parquet(pa.table({"h": pa.array(h, pa.uint64()), "id": ids}), path)


def decide_ids(out_dir: str, shards: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """Over every input's kept parts (``[(input key, [kept/part-...parquet, ...])]`` in input
    order, an input's parts in order: several ranges of one input are one entry): the rows
    whose id an earlier row has. A row whose id an earlier row *of the same input* has is to
    be dropped (``ingest.duplicate_id``, as a read of the whole input rejects it: only a
    split input has any); the others get new ids (``<id>#<input key>``). Written per shard
    (an input, or a range of one: applied in parallel) to ``ids/renames/<shard key>.parquet``.
    Runs in one task; holds ~24 bytes per kept document (and a Python int per renamed one)."""
    out = Path(out_dir)
    shutil.rmtree(out / "ids" / "renames", ignore_errors=True)  # an interrupted attempt's
    parts = [(key, rel) for key, rels in shards for rel in rels]
    keys = [pq.read_table(_keys(out, rel), columns=["h"]).column("h").to_numpy()
            for _, rel in parts]
    if not keys:
        return {"renamed": 0, "dropped": 0, "shards": {}}
    starts = np.cumsum([0] + [len(k) for k in keys])
    allh = np.concatenate(keys)
    del keys
    order = np.argsort(allh, kind="stable")  # equal hashes stay in input, then row order
    ordered = allh[order]
    at = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    group = np.unique([k for k, _ in parts], return_inverse=True)[1]
    part_of = np.searchsorted(starts, order[at], side="right") - 1
    # the row before in the run of equal ids is of the same input: a repeat within it
    same = group[part_of] == group[np.searchsorted(starts, order[at - 1], side="right") - 1]
    later, drop = np.sort(order[at][~same]), np.sort(order[at][same])
    del order
    given: set[int] = set()  # hashes of the new ids handed out

    def free(rid: str) -> bool:
        h = id_hash(rid)
        i = int(np.searchsorted(ordered, np.uint64(h)))
        return not (i < len(ordered) and int(ordered[i]) == h) and h not in given

    decided: dict[str, dict[str, list[Any]]] = {}
    for rows_all, dropping in ((later, False), (drop, True)):
        owner = np.searchsorted(starts, rows_all, side="right") - 1  # sorted, as rows_all is
        found, first = np.unique(owner, return_index=True)
        bounds = np.r_[first, len(owner)].tolist()
        for p, lo, hi in zip(found.tolist(), bounds[:-1], bounds[1:], strict=True):
            key, rel = parts[p]
            rows = (rows_all[lo:hi] - starts[p]).tolist()
            got = decided.setdefault(range_key(rel), {c: [] for c in DECISION})
            ids = [None] * len(rows) if dropping else \
                pq.read_table(_keys(out, rel), columns=["id"]).column("id").take(rows).to_pylist()
            for row, rid in zip(rows, ids, strict=True):
                new = None
                if not dropping:
                    new, n = f"{rid}#{key}", 1
                    while not free(new):
                        n += 1
                        new = f"{rid}#{key}-{n}"
                    given.add(id_hash(new))
                for col, v in zip(DECISION, (rel, row, new, rid, dropping,
                                             int(starts[p + 1] - starts[p])), strict=True):
                    got[col].append(v)
    for key, cols in decided.items():
        write_parquet(pa.table(cols), out / "ids" / "renames" / f"{key}.parquet")
    return {"renamed": int(len(later)), "dropped": int(len(drop)),
            "shards": {k: len(v["row"]) for k, v in decided.items()}}


# a decision row: the part and row, the new id (None: dropped), the id as read, whether the
# row is dropped, and the part's rows when decided (a part with fewer was done already)
DECISION = ("part", "row", "id", "original", "drop", "part_rows")


def _keys(out: Path, kept_rel: str) -> Path:
    return out / "ids" / Path(kept_rel).name


def range_key(kept_rel: str) -> str:
    """The shard (input or range) key of a kept part: ``kept/part-<key>-0003.parquet``."""
    return Path(kept_rel).name.removeprefix("part-").rsplit("-", 1)[0]


def _dups(out: Path, rel: str) -> Path:
    return out / "rejected" / f"{Path(rel).stem}-dups.parquet"


def rename_shard(out_dir: str, key: str) -> dict[str, Any]:
    """Apply shard `key`'s decisions to its kept parts: new ids set (idempotent), repeated ids
    moved to ``rejected/<part>-dups.parquet`` (done once per part: a part holding fewer rows
    than when decided, or a key file holding fewer, was done already; `dropped` counts what
    was moved). Returns the rows renamed."""
    out = Path(out_dir)
    dec = pq.read_table(out / "ids" / "renames" / f"{key}.parquet").to_pydict()
    by_part: dict[str, dict[int, tuple[str | None, str, bool]]] = {}
    part_rows: dict[str, int] = {}
    for rel, row, new, orig, drop, n in zip(*(dec[c] for c in DECISION), strict=True):
        by_part.setdefault(rel, {})[row] = (new, orig, drop)
        part_rows[rel] = n
    for rel, rows in by_part.items():
        path = out / rel
        gone = sorted(r for r, (_, _, d) in rows.items() if d)
        pf = pq.ParquetFile(path)
        if not gone or pf.metadata.num_rows == part_rows[rel]:
            group_rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups \
                else None
            t = pf.read()
            ids, metas = t.column("id").to_pylist(), t.column("meta").to_pylist()
            for row, (new, orig, drop) in rows.items():
                if drop:
                    continue
                meta = json.loads(metas[row]) if metas[row] else {}
                meta[ORIGINAL_KEY] = orig
                ids[row], metas[row] = new, json.dumps(meta, ensure_ascii=False, default=str)
            t = t.set_column(t.schema.get_field_index("id"), t.schema.field("id"),
                             pa.array(ids, pa.string()))
            t = t.set_column(t.schema.get_field_index("meta"), t.schema.field("meta"),
                             pa.array(metas, pa.string()))
            if gone:
                keep = np.ones(len(t), bool)
                keep[gone] = False
                dups = t.take(gone)
                write_parquet(with_reject(dups, "ingest", pa.array(
                    ["ingest.duplicate_id"] * len(dups), pa.string())), _dups(out, rel))
                t = t.filter(keep)
            write_parquet(t, path, row_group_rows=group_rows)
        if gone:
            kf = _keys(out, rel)
            if pq.ParquetFile(kf).metadata.num_rows == part_rows[rel]:
                k = pq.read_table(kf)
                keep = np.ones(len(k), bool)
                keep[gone] = False
                write_parquet(k.filter(keep), kf)
    return {"renamed": sum(1 for rows in by_part.values() for _, _, d in rows.values()
                           if not d)}


def dropped(out_dir: str, key: str) -> tuple[int, dict[str, int]]:
    """The rows the id step moved out of shard `key`'s kept parts (a range of a split input),
    and their languages: what its ``-dups`` parts hold, whatever decision put them there."""
    n, langs = 0, {}
    for p in sorted((Path(out_dir) / "rejected").glob(f"part-{key}-*-dups.parquet")):
        for lang in pq.read_table(p, columns=["lang"]).column("lang").to_pylist():
            n += 1
            langs[lang or "und"] = langs.get(lang or "und", 0) + 1
    return n, langs

def input_key(key: str) -> str:
    """The input a shard key belongs to: ``00003.0002`` (a range) -> ``00003``."""
    return key.split(".", 1)[0]


def forget(out: Any, keys: list[str]) -> None:
    """Before the shards run: an input with a shard about to be (re)ingested has its original
    ids again, so the id decision is taken anew and its renames redone; every range of it is
    read again (the id step may have cut its finished ranges' parts). `out` is a StageDir."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(input_key(k), []).append(k)
    redo = [g for g, ks in groups.items() if any(out.shard_done(k) is None for k in ks)]
    for g in redo:
        for k in groups[g]:
            out.shard_marker(f"ids-{k}").unlink(missing_ok=True)
            if len(groups[g]) > 1:
                out.shard_marker(k).unlink(missing_ok=True)
    if redo:
        (out.path / "ids" / "decided.json").unlink(missing_ok=True)


def unique_ids(out: Any, ex: Any, shards: list[tuple[str, list[str]]], split: bool = False
               ) -> list[dict[str, Any]]:
    """The cross-input step of the ingest stage (`out` a StageDir, `ex` its Executor):
    decide once (a marker holds the decision), then rename / drop per shard (resumable by the
    executor's per-shard markers). Returns the per-shard results (`ids.rename_shard`)."""
    if len(shards) < 2 and not split:
        return []
    marker = out.path / "ids" / "decided.json"
    if marker.is_file():
        decided = json.loads(marker.read_text())
    else:
        decided = ex.task(decide_ids, str(out.path), shards, desc="ingest ids")
        atomic_write_json(marker, decided)
    jobs = [(f"ids-{k}", (str(out.path), k)) for k in sorted(decided["shards"])]
    return ex.shards(out, rename_shard, jobs, "ingest ids") if jobs else []


def make_unique(out: Any, ex: Any, shards: list[tuple[str, list[str]]]) -> int:
    """`unique_ids` over inputs read whole; returns how many ids were renamed."""
    return sum(int(r.get("renamed", 0)) for r in unique_ids(out, ex, shards))
