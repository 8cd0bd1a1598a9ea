"""MinHash near-dedup as a corpus rule: memory grows with the duplicates, not with the corpus.

The same decisions as ``tasks.filters.minhash.clusters`` (and, with a dedup index,
``tasks.dedup_index.seen_near`` first), computed the datatrove way in tasks fanned out through
``ctx.map`` (``tasks.corpus.lsh``):

1. ``keys`` (per shard): shard, row, one uint64 column per band (``band_000`` ...) and ``sig``
   of the rows in play, so a band task reads its band columns and nothing else.
2. ``decide``:

   a. **seen before** (only with ``ctx.index_parts``): per group of bands x key partition,
      the candidates' band keys joined with the index parts' (every index document sharing a
      key, as ``seen_near`` does); the pairs verified by estimated Jaccard >= ``threshold``
      with signatures fetched for pair endpoints only. Those candidates are dropped
      (``minhash_dedup.seen_before``) and take no further part.
   b. **candidate pairs**: per group of bands x key partition, each band's (key, shard, row)
      sorted; each document paired with its bucket's head and its ``WINDOW`` predecessors,
      exactly as ``minhash.clusters``.
   c. **verify**: per group of shards, the distinct pairs whose first document is there,
      against the signatures of the pairs' endpoints only (read from the key files in
      batches by an earlier round of tasks).
   d. **clusters**: union-find over the verified pairs' endpoints (not over all documents).
      The survivor of a cluster is its smallest (shard, row); the others are dropped
      (``minhash_dedup.near_duplicate``). Clusters are connected components of the verified
      pairs, which do not depend on the order pairs are verified in: the same clusters as
      ``minhash.clusters``.

   Decision files hold every member of a cluster of two or more (the survivor with a null
   rule) and every ``seen_before`` document; a candidate without a row is a singleton
   (``annotate`` fills its cluster id and size 1, as the filter stage always has).

Memory bound (n = documents in play, i = index documents, d = documents in candidate pairs,
about the duplicates plus LSH false positives, p = their pairs):

- a band task holds ``G x (n + i) / P`` (key, id) entries, 16 B each and ~3x that while
  sorting, i.e. ~8 B x n per band as planned: ``G`` bands per task (up to
  ``bands / BAND_TASKS``, fewer when the corpus is large) and, past ``BAND_BUDGET`` documents,
  ``P`` key partitions (``key % P``; each re-reads its band column, trading I/O for memory),
  so that ``G x (n + i) / P <= BAND_BUDGET``; plus one row group's band columns; its pairs;
- a signature task holds its group's endpoint ids (8 B each) and one Parquet row group's
  signature column at a time (Parquet's unit of I/O: a shard's, when a key file is one row
  group), decoded ``lsh.BATCH`` rows at a time, and streams the endpoints' signatures out;
- a verify task holds its group's pairs (16 B each), the signatures of their first documents
  and those of their second documents one group at a time; groups are runs of shards of
  about ``GROUP_DOCS`` documents, so a task holds at most two groups' signatures (2 x 256 MB
  at 250 permutations), and far less when few documents are duplicates;
- ``decide`` itself holds the verified pairs and their endpoints (union-find) and the
  decision rows: O(d + p). No step holds all documents' signatures or all band keys.

The dedup index's parts store band keys as one list column; a first round (``split_task``,
one per part) rewrites them one column per band, so band tasks read the index once per band.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.corpus import lsh
from tasks.corpus.base import RuleContext, split_by_shard
from tasks.filters import minhash
from tasks.filters.minhash import BANDS_COLUMN, SIG_COLUMN, _matrix, _union

NAME = "minhash_dedup"
VERSION = 1
Config = minhash.Config  # the recipe's stages.filter.minhash_dedup (has score_params())
COLUMNS = (BANDS_COLUMN, SIG_COLUMN)
INDEX_COLUMNS = (BANDS_COLUMN, SIG_COLUMN)  # what the dedup index keeps of a kept document
TRANSIENT_COLUMNS = (SIG_COLUMN, BANDS_COLUMN)  # not copied to the kept / rejected output
ANNOTATIONS = {"near_dedup_cluster": pa.string(), "near_dedup_cluster_size": pa.int64()}
RULE = minhash.RULE  # "minhash_dedup.near_duplicate"
SEEN = "minhash_dedup.seen_before"

WINDOW = 16  # predecessors each document is compared with in a bucket (minhash.clusters')
BAND_TASKS = 10  # band tasks per round (times the key partitions)
BAND_BUDGET = 1 << 23  # (key, id) entries a band task may hold (~0.4 GB while sorting)
GROUP_DOCS = 1 << 18  # documents per signature / verify group (<= 256 MB of signatures)


def score(table: pa.Table, cfg: minhash.Config) -> pa.Table:
    """Computed once in the score step: ``SIG_COLUMN`` and ``BANDS_COLUMN`` per document."""
    return minhash.hash_texts(table.column("text"), cfg)


def keys(scored: pa.Table, shard: int, rows: np.ndarray | None, cfg: minhash.Config,
         ctx: RuleContext | None = None) -> pa.Table:
    """The shard's candidates: shard (int32), row (int64), ``band_000``... (uint64, one
    column per band) and ``sig`` (fixed_size_list<uint32>[num_perm]) for ``rows``."""
    c = minhash.candidates(scored, shard, rows)
    bands = _matrix(c.column("bands"), np.uint64) if len(c) else np.zeros((0, cfg.bands),
                                                                           np.uint64)
    if bands.shape[1] != cfg.bands:
        raise ValueError(f"scored {BANDS_COLUMN} has {bands.shape[1]} bands, config {cfg.bands}")
    cols: dict[str, Any] = {"shard": c.column("shard"), "row": c.column("row")}
    for k in range(cfg.bands):
        cols[lsh.band_column(k)] = pa.array(bands[:, k], pa.uint64())
    cols["sig"] = c.column("sig")
    return pa.table(cols)


def _key_source(key_files: list[str]) -> lsh.Source:
    """The key files as a Source: the shards each holds (read one file at a time)."""
    units: list[tuple[int, ...]] = []
    unit_rows: dict[int, int] = {}
    for f in key_files:
        shard = pq.read_table(f, columns=["shard"]).column("shard").to_numpy()
        u, n = np.unique(shard, return_counts=True)
        if len(u) and (u.min() < 0 or u.max() >= 1 << 23):
            raise ValueError(f"shard numbers must be in [0, 2**23): {f}")
        units.append(tuple(int(x) for x in u))
        for x, c in zip(u, n, strict=True):
            unit_rows[int(x)] = unit_rows.get(int(x), 0) + int(c)
    return lsh.make_source("c", key_files, units, unit_rows, GROUP_DOCS)


def _index_source(parts: list[dict[str, Any]], cfg: minhash.Config) -> lsh.Source | None:
    """The index parts that hold MinHash keys of this config (others cannot match)."""
    files: list[str] = []
    unit_rows: dict[int, int] = {}
    for f in (f for p in parts for f in p["files"]):
        schema = pq.read_schema(f)
        if BANDS_COLUMN not in schema.names or SIG_COLUMN not in schema.names:
            continue
        bt, st = schema.field(BANDS_COLUMN).type, schema.field(SIG_COLUMN).type
        if getattr(bt, "list_size", 0) != cfg.bands or getattr(st, "list_size", 0) != cfg.num_perm:
            continue
        unit_rows[len(files)] = pq.ParquetFile(f).metadata.num_rows
        files.append(f)
    if not files:
        return None
    return lsh.make_source("i", files, [(i,) for i in range(len(files))], unit_rows, GROUP_DOCS,
                           index=True)


def _pairs_round(ctx: RuleContext, work: Path, left: lsh.Source, right: lsh.Source | None,
                 cfg: minhash.Config, exclude: Path | None) -> tuple[int, int]:
    """Steps a-c for one round: band tasks, signature tasks, verify tasks (through
    ``ctx.map``). Verified pairs land in ``work/verified``. Returns (pairs, verified)."""
    n = left.rows + (right.rows if right else 0)
    # as many bands per task as fit the budget (up to bands / BAND_TASKS); past the budget
    # one band is cut into key partitions, each re-reading the band column (I/O for memory)
    per = max(1, min(-(-cfg.bands // BAND_TASKS), BAND_BUDGET // max(n, 1)))
    n_parts = max(1, -(-n * per // BAND_BUDGET))
    groups = [list(range(b, min(b + per, cfg.bands))) for b in range(0, cfg.bands, per)]
    ctx.map(lsh.band_task, [
        (str(work), left, right, g, p, n_parts, WINDOW, str(exclude) if exclude else None,
         f"b{gi:03d}-p{p:04d}") for gi, g in enumerate(groups) for p in range(n_parts)])
    srcs = [left] + ([right] if right else [])
    ctx.map(lsh.sig_task, [(str(work), s, k) for s in srcs for k in range(len(s.group_start))])
    got = ctx.map(lsh.verify_task, [(str(work), left, right, k, cfg.threshold)
                                    for k in range(len(left.group_start))])
    return sum(g[0] for g in got), sum(g[1] for g in got)


def _verified(work: Path) -> tuple[np.ndarray, np.ndarray]:
    files = sorted((work / "verified").glob("*.parquet"))
    if not files:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = pa.concat_tables(pq.read_table(f) for f in files)
    return t.column("u").to_numpy(), t.column("v").to_numpy()


def _place(ids: np.ndarray) -> tuple[pa.Array, pa.Array]:
    return (pa.array(ids >> lsh.ROW_BITS, pa.int32()),
            pa.array(ids & lsh.ROW_MASK, pa.int64()))


def decide(key_files: list[str], out_dir: Path, cfg: minhash.Config,
           ctx: RuleContext) -> dict[str, Any]:
    """Near-duplicate (and seen-before) decisions for every shard; see the module docstring.
    Returns {"candidate_pairs", "verified_pairs", "clusters", "dropped": {rule: n}}."""
    work = Path(ctx.work_dir) / NAME
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        cand = _key_source(list(key_files))
        seen = np.zeros(0, np.int64)
        exclude = None
        index = _index_source(ctx.index_parts, cfg) if ctx.index_parts and cand.rows else None
        if index is not None:
            split = ctx.map(lsh.split_task, [(str(work / "seen"), index, fi)
                                             for fi in range(len(index.files))])
            index = replace(index, band_files=tuple(split))
            _pairs_round(ctx, work / "seen", cand, index, cfg, None)
            seen = np.unique(_verified(work / "seen")[0])
            exclude = work / "seen.parquet"
            pq.write_table(pa.table({"id": pa.array(seen, pa.int64())}), exclude)
        n_pairs = n_ok = 0
        if cand.rows - len(seen) > 1:
            n_pairs, n_ok = _pairs_round(ctx, work / "near", cand, None, cfg, exclude)
        u, v = _verified(work / "near")
        # union-find over the endpoints; nodes in id = (shard, row) order, so a root (the
        # smallest node of its component) is the cluster's smallest (shard, row)
        nodes = np.unique(np.concatenate([u, v]))
        parent = np.arange(len(nodes), dtype=np.int64)
        _union(parent, np.searchsorted(nodes, u), np.searchsorted(nodes, v))
        del u, v
        size = np.bincount(parent, minlength=len(nodes))[parent]
        root = nodes[parent]
        survivor = parent == np.arange(len(nodes))
        ids = np.concatenate([seen, nodes])
        rules = np.array([SEEN] * len(seen) + [None] * len(nodes), dtype=object)
        rules[len(seen):][~survivor] = RULE
        shard, row = _place(ids)
        cs, cr = _place(np.concatenate([seen, root]))
        cluster = pc.binary_join_element_wise(cs.cast(pa.string()), cr.cast(pa.string()), ":")
        is_seen = np.arange(len(ids)) < len(seen)
        table = pa.table({
            "shard": shard, "row": row, "rule": pa.array(rules, pa.string()),
            "near_dedup_cluster": pc.if_else(pa.array(is_seen), pa.scalar(None, pa.string()),
                                             cluster),
            "near_dedup_cluster_size": pa.array(np.concatenate([np.zeros(len(seen), np.int64),
                                                                size]), pa.int64(),
                                                mask=is_seen),
        })
        dropped = split_by_shard(Path(out_dir), table)
        return {"candidate_pairs": n_pairs, "verified_pairs": n_ok,
                "clusters": int(survivor.sum()), "dropped": dropped}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def annotate(table: pa.Table, shard: int, decisions: pa.Table | None,
             candidate_rows: np.ndarray) -> dict[str, pa.Array]:
    """The columns added to every document of the shard (``table``): ``near_dedup_cluster``
    ("<shard>:<row>" of the cluster's survivor) and ``near_dedup_cluster_size``, as the
    filter stage has always written them: a candidate without a decision row is its own
    cluster of size 1; a ``seen_before`` document and a row that was no candidate get nulls."""
    n = len(table)
    rows = np.asarray(candidate_rows, dtype=np.int64)
    cluster = np.full(n, None, dtype=object)
    size = np.zeros(n, dtype=np.int64)
    cluster[rows] = [f"{shard}:{r}" for r in rows.tolist()]
    size[rows] = 1
    if decisions is not None and len(decisions):
        drows = decisions.column("row").to_numpy()
        cluster[drows] = decisions.column("near_dedup_cluster").to_pylist()
        size[drows] = pc.fill_null(decisions.column("near_dedup_cluster_size"), 0).to_numpy()
    return {"near_dedup_cluster": pa.array(cluster.tolist(), pa.string()),
            "near_dedup_cluster_size": pa.array(np.where(size > 0, size, None).tolist(),
                                                pa.int64())}
