"""LSH pair finding for the MinHash corpus rule, in bounded pieces (``tasks.corpus.minhash``).

The work is split the datatrove way, in three rounds of tasks that exchange small Parquet
files under a scratch folder:

1. ``band_task`` (one per group of bands x key partition): reads only those band columns of
   every input file, keeps the keys of its partition (``key % n_parts``), sorts each band by
   (key, id) and writes the candidate pairs, split by the group of their first document
   (``pairs/<group>/``), and the pairs' endpoints, split by their own group (``ends/``).
2. ``sig_task`` (one per group of input files): reads the signatures of its files batch by
   batch and streams the endpoints' to ``sigs/``.
3. ``verify_task`` (one per group): deduplicates its pairs, verifies them by estimated Jaccard
   and writes the pairs that pass (``verified/``).

Dedup index parts store their band keys as one list column; ``split_task`` (one per part)
first rewrites them one column per band, so that a band task reads its bands only.

A document is named by one int64 id, ``unit << 40 | row``: the unit is the shard for the rule's
key files, the file's number for the dedup index parts. Ids sort as (shard, row), the order
survivors are chosen by. A ``Source`` says where the documents of one side are and how its
units are grouped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.filters.minhash import BANDS_COLUMN, SIG_COLUMN
from tasks.store import write_parquet

ROW_BITS = 40
ROW_MASK = (1 << ROW_BITS) - 1
BATCH = 1 << 12  # rows per read batch (4 MB of signatures at 250 permutations)
_PAIR_CHUNK = 1 << 13  # pairs verified per block (2 x 8 MB of signatures at 250 permutations)


def band_column(k: int) -> str:
    """The key files' column of band ``k`` (one column per band, so a task reads only its)."""
    return f"band_{k:03d}"


@dataclass(frozen=True)
class Source:
    """One side of a join: the rule's key files (``index=False``; columns shard, row, one
    ``band_column`` per band or a ``bands`` list, ``sig``) or dedup index parts
    (``index=True``; ``BANDS_COLUMN`` and ``SIG_COLUMN`` lists, the unit = the file's number;
    ``band_files``: their band keys one column per band, ``split_task``'s output).
    ``units[i]``: the units file ``i`` holds; ``group_start``: each group's first unit."""

    name: str
    files: tuple[str, ...]
    units: tuple[tuple[int, ...], ...]
    group_start: tuple[int, ...]
    rows: int
    index: bool = False
    band_files: tuple[str, ...] = ()  # where to read band keys instead of ``files``

    def group_of(self, units: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.group_start), units, side="right") - 1

    def files_of(self, group: int) -> list[tuple[int, str]]:
        lo = self.group_start[group]
        hi = self.group_start[group + 1] if group + 1 < len(self.group_start) else 1 << 62
        return [(i, f) for i, f in enumerate(self.files)
                if any(lo <= u < hi for u in self.units[i])]


def make_source(name: str, files: list[str], units: list[tuple[int, ...]],
                unit_rows: dict[int, int], group_docs: int, index: bool = False) -> Source:
    """A Source whose groups are runs of consecutive units of about ``group_docs`` rows."""
    starts: list[int] = []
    acc = 0
    for u in sorted(unit_rows):
        if not starts or acc + unit_rows[u] > group_docs:
            starts.append(u)
            acc = 0
        acc += unit_rows[u]
    return Source(name, tuple(files), tuple(units), tuple(starts) or (0,),
                  sum(unit_rows.values()), index)


# --------------------------------------------------------------------------- reading


def _fixed(col: pa.Array, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Valid-row mask and the 2-D values of a fixed-size list column (nulls left out)."""
    valid = ~col.is_null().to_numpy(zero_copy_only=False)
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return valid, flat.reshape(int(valid.sum()), col.type.list_size)


def batches(pf: pq.ParquetFile, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """``columns`` of the file, ``BATCH`` rows at a time, one row group after the other:
    one ``iter_batches`` over many row groups keeps decoded data of those already read (a
    48 MB signature file peaked at 141 MB of Arrow memory; row group by row group, 7 MB)."""
    for i in range(pf.metadata.num_row_groups):
        yield from pf.iter_batches(batch_size=BATCH, row_groups=[i], columns=columns)


def _ids(fi: int, rb: pa.RecordBatch, start: int) -> np.ndarray:
    """Ids of a batch: (shard or file number, row), or the file's row positions."""
    if "row" not in rb.schema.names:
        return (np.int64(fi) << ROW_BITS) | np.arange(start, start + rb.num_rows, dtype=np.int64)
    unit = (rb.column("shard").to_numpy().astype(np.int64) if "shard" in rb.schema.names
            else np.int64(fi))
    return (unit << ROW_BITS) | rb.column("row").to_numpy().astype(np.int64)


def iter_bands(src: Source, fi: int, bands: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, keys of ``bands``: 2-D uint64) of file ``fi``, batch by batch: from one column
    per band where the file has them (only those are read), else from a list column."""
    pf = pq.ParquetFile(src.band_files[fi] if src.band_files else src.files[fi])
    names = pf.schema_arrow.names
    listed = next((c for c in (BANDS_COLUMN, "bands") if c in names), None)
    cols = [c for c in ("shard", "row") if c in names]
    cols += [listed] if listed else [band_column(k) for k in bands]
    start = 0
    for rb in batches(pf, cols):
        ids = _ids(fi, rb, start)
        start += rb.num_rows
        if listed:
            valid, mat = _fixed(rb.column(listed), np.uint64)
            yield ids[valid], mat[:, bands]
        else:
            yield ids, np.stack([rb.column(band_column(k)).to_numpy() for k in bands], axis=1)


def split_task(work: str, src: Source, fi: int) -> str:
    """An index part's band keys rewritten one column per band, with their row positions:
    read once here, so that each band task reads its own band columns only."""
    n_bands = pq.read_schema(src.files[fi]).field(BANDS_COLUMN).type.list_size
    out = Path(work) / "split" / f"{fi:05d}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("row", pa.int64())]
                       + [(band_column(k), pa.uint64()) for k in range(n_bands)])
    with pq.ParquetWriter(out, schema) as writer:
        for ids, keys in iter_bands(src, fi, list(range(n_bands))):
            cols = [pa.array(ids & ROW_MASK)] + [pa.array(keys[:, k]) for k in range(n_bands)]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))
    return str(out)


def in_sorted(x: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    if not len(sorted_ids):
        return np.zeros(len(x), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, x), len(sorted_ids) - 1)
    return sorted_ids[pos] == x


def read_ids(paths: list[Path], column: str = "id") -> np.ndarray:
    """Sorted distinct ids of ``column`` across files."""
    parts = [pq.read_table(p, columns=[column]).column(column).to_numpy() for p in paths]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _write_ids(path: Path, ids: np.ndarray) -> None:
    write_parquet(pa.table({"id": pa.array(ids, pa.int64())}), path)


# --------------------------------------------------------------------------- 1. bands


def _collect(src: Source, bands: list[int], part: int, n_parts: int,
             drop: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per band: (keys, ids) of the partition's documents of ``src``, ``drop`` left out."""
    got: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in bands]
    for fi in range(len(src.files)):
        for ids, keys in iter_bands(src, fi, bands):
            keep = ~in_sorted(ids, drop)
            for j in range(len(bands)):
                m = keep & (keys[:, j] % np.uint64(n_parts) == part) if n_parts > 1 else keep
                got[j][0].append(keys[m, j])
                got[j][1].append(ids[m])
    return [(np.concatenate(k) if k else np.zeros(0, np.uint64),
             np.concatenate(i) if i else np.zeros(0, np.int64)) for k, i in got]


def bucket_pairs(key: np.ndarray, ids: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs within buckets of one band, as ``minhash.clusters`` forms them: each document
    with its bucket's head and with its ``window`` predecessors, buckets in id order."""
    o = np.lexsort((ids, key))
    ks, si = key[o], ids[o]
    if len(ks) > 1 and np.any((ks[1:] == ks[:-1]) & (si[1:] == si[:-1])):
        raise ValueError("duplicate (shard, row) in the key files")
    new = np.ones(len(ks), dtype=bool)
    new[1:] = ks[1:] != ks[:-1]
    run_start = np.flatnonzero(new)
    run_len = np.diff(np.append(run_start, len(ks)))
    shared = np.repeat(run_len >= 2, run_len)  # documents in buckets of two or more
    ks, si, new = ks[shared], si[shared], new[shared]
    run_len = run_len[run_len >= 2]
    n = len(si)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    head = np.repeat(np.flatnonzero(new), run_len)
    us, vs = [si[head[~new]]], [si[~new]]  # star: every document vs. its bucket head
    pos = np.arange(n)
    for d in range(1, min(window, int(run_len.max()) - 1) + 1):
        p = pos[d:][pos[:-d] > head[d:]]  # the doc d places back is in the bucket, not head
        if not len(p):
            break
        us.append(si[p - d])
        vs.append(si[p])
    return np.concatenate(us), np.concatenate(vs)


def join_pairs(ckey: np.ndarray, cid: np.ndarray, ikey: np.ndarray,
               iid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (candidate, index document) pair sharing a key of one band."""
    o = np.argsort(ikey, kind="stable")
    ik, ii = ikey[o], iid[o]
    lo = np.searchsorted(ik, ckey, side="left")
    cnt = np.searchsorted(ik, ckey, side="right") - lo
    hit = cnt > 0
    cid, lo, cnt = cid[hit], lo[hit], cnt[hit]
    first = np.cumsum(cnt) - cnt
    return np.repeat(cid, cnt), ii[np.repeat(lo - first, cnt) + np.arange(int(cnt.sum()))]


def unique_pairs(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.lexsort((v, u))
    u, v = u[o], v[o]
    keep = np.ones(len(u), dtype=bool)
    keep[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return u[keep], v[keep]


def band_task(work: str, left: Source, right: Source | None, bands: list[int], part: int,
              n_parts: int, window: int, exclude: str | None, tag: str) -> int:
    """Candidate pairs of ``bands`` in key partition ``part``: within ``left`` (``right`` None)
    or between ``left`` and ``right``. ``exclude``: a file of ids left out. Returns pairs."""
    drop = read_ids([Path(exclude)]) if exclude else np.zeros(0, np.int64)
    lk = _collect(left, bands, part, n_parts, drop)
    rk = _collect(right, bands, part, n_parts, np.zeros(0, np.int64)) if right else None
    us, vs = [], []
    for j in range(len(bands)):
        u, v = (bucket_pairs(*lk[j], window) if rk is None else join_pairs(*lk[j], *rk[j]))
        us.append(u)
        vs.append(v)
    del lk, rk  # the keys are done with; the pairs stay
    u, v = unique_pairs(np.concatenate(us), np.concatenate(vs))
    right = right or left
    base = Path(work)
    g = left.group_of(u >> ROW_BITS)
    for j in np.unique(g):
        m = g == j
        write_parquet(pa.table({"u": pa.array(u[m], pa.int64()), "v": pa.array(v[m], pa.int64())}),
                      base / "pairs" / f"{j:04d}" / f"{tag}.parquet")
    for side, src, ids in (("u", left, u), ("v", right, v)):
        ids = np.unique(ids)
        gi = src.group_of(ids >> ROW_BITS)
        for k in np.unique(gi):
            _write_ids(base / "ends" / src.name / f"{k:04d}" / f"{tag}-{side}.parquet",
                       ids[gi == k])
    return len(u)


# --------------------------------------------------------------------------- 2. signatures


def _pick(path: str | Path, fi: int, want: np.ndarray, column: str
          ) -> Iterator[tuple[np.ndarray, pa.FixedSizeListArray]]:
    """(ids, signatures) of the rows of ``path`` whose id is in ``want`` (sorted), batch by
    batch; null signatures left out."""
    pf = pq.ParquetFile(path)
    cols = [c for c in ("id", "shard", "row") if c in pf.schema_arrow.names] + [column]
    start = 0
    for rb in batches(pf, cols):
        ids = (rb.column("id").to_numpy() if "id" in rb.schema.names
               else _ids(fi, rb, start))
        start += rb.num_rows
        m = in_sorted(ids, want)
        if m.any():
            col = rb.column(column).filter(pa.array(m))
            valid = col.is_valid()
            yield ids[m][valid.to_numpy(zero_copy_only=False)], col.filter(valid)


def sig_task(work: str, src: Source, group: int) -> int:
    """The signatures of the group's documents that are pair endpoints, from its files,
    streamed batch by batch to ``sigs/<source>/<group>.parquet`` (id, sig)."""
    base = Path(work)
    want = read_ids(sorted((base / "ends" / src.name / f"{group:04d}").glob("*.parquet")))
    out = base / "sigs" / src.name / f"{group:04d}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer, n = None, 0
    # files in unit order: from key files in row order, the ids come out sorted
    for fi, path in sorted(src.files_of(group), key=lambda f: src.units[f[0]]) if len(want) else []:
        for ids, sig in _pick(path, fi, want, SIG_COLUMN if src.index else "sig"):
            t = pa.table({"id": pa.array(ids, pa.int64()), "sig": sig})
            writer = writer or pq.ParquetWriter(tmp, t.schema)
            writer.write_table(t)
            n += len(t)
    if writer is not None:
        writer.close()
        tmp.replace(out)
    return n


def _signatures(work: str, src: Source, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted ids, their signatures) for ``ids`` (those without one are left out)."""
    want = np.unique(ids)
    got_ids, got_sig = [], []
    for k in np.unique(src.group_of(want >> ROW_BITS)):
        path = Path(work) / "sigs" / src.name / f"{k:04d}.parquet"
        for have, sig in _pick(path, 0, want, "sig") if path.exists() else []:
            got_ids.append(have)
            got_sig.append(_fixed(sig, np.uint32)[1])
    if not got_ids:
        return np.zeros(0, np.int64), np.zeros((0, 1), np.uint32)
    ids_all = np.concatenate(got_ids)
    sig_all = np.concatenate(got_sig)
    del got_sig
    if np.all(ids_all[1:] > ids_all[:-1]):  # as sig_task writes them from sorted key files
        return ids_all, sig_all
    o = np.argsort(ids_all)
    return ids_all[o], sig_all[o]


# --------------------------------------------------------------------------- 3. verify


def verify_task(work: str, left: Source, right: Source | None, group: int,
                threshold: float) -> tuple[int, int]:
    """Verify the group's distinct pairs (estimated Jaccard >= ``threshold``); write those
    that pass to ``verified/<group>.parquet``. Returns (pairs, verified pairs).

    Holds the pairs, the signatures of their first documents (all in this group) and those
    of their second documents one group at a time: at most two groups' signatures."""
    base = Path(work)
    files = sorted((base / "pairs" / f"{group:04d}").glob("*.parquet"))
    if not files:
        return 0, 0
    u, v = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for f in files:  # deduplicated file by file: the band tasks' pairs overlap
        t = pq.read_table(f)
        u, v = unique_pairs(np.concatenate([u, t.column("u").to_numpy()]),
                            np.concatenate([v, t.column("v").to_numpy()]))
    del t
    within = right is None
    right = right or left
    gv = right.group_of(v >> ROW_BITS)
    # within one source, this group's signatures serve both sides of its own pairs
    lid, lsig = _signatures(work, left, np.concatenate([u, v[gv == group]]) if within else u)
    ok = np.zeros(len(u), dtype=bool)
    for k in np.unique(gv):
        at = np.flatnonzero(gv == k)
        rid, rsig = ((lid, lsig) if within and k == group
                     else _signatures(work, right, v[at]))
        if lsig.shape[1] != rsig.shape[1]:
            continue  # signatures of another width (an index of another config) never match
        for c in range(0, len(at), _PAIR_CHUNK):
            pos = at[c:c + _PAIR_CHUNK]
            pos = pos[in_sorted(u[pos], lid) & in_sorted(v[pos], rid)]
            su = lsig[np.searchsorted(lid, u[pos])]
            sv = rsig[np.searchsorted(rid, v[pos])]
            ok[pos] = (su == sv).sum(axis=1) >= threshold * su.shape[1] - 1e-9
        del rid, rsig
    write_parquet(pa.table({"u": pa.array(u[ok], pa.int64()), "v": pa.array(v[ok], pa.int64())}),
                  base / "verified" / f"{group:04d}.parquet")
    return len(u), int(ok.sum())
