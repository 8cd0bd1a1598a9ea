"""The MinHash corpus rule (tasks/corpus/minhash.py) decides exactly as the in-process path it
replaces: ``minhash.clusters`` over all candidates plus the filter stage's annotation of every
candidate (cluster id and size), and with a dedup index the lookup ``seen_near`` did first
(``tasks/dedup_index.py``'s DuckDB join, since removed; the rule was checked against it
before; ``seen_near`` below is the same lookup in numpy, the reference now).

Planted corpus: real documents from the sample (>= 60 words), one- and two-word variants
(true 5-gram Jaccard ~0.9+), exact copies, and one text copied 25 times (a bucket larger than
the comparison window), spread over 4 shards in random order; some rows are not in play."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.corpus import minhash as rule
from tasks.corpus.base import RuleContext, decision_path, serial_map
from tasks.filters import minhash as mh

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"
N_SHARDS = 4


@pytest.fixture(scope="module")
def originals() -> list[str]:
    """Sample documents of >= 60 words, no two of them near-duplicates (J >= 0.5)."""
    texts = [t for t in (json.loads(line)["text"] for line in
                         SAMPLE.read_text(encoding="utf-8").splitlines())
             if len(t.split()) >= 60][:400]
    cl = mh.clusters(_cands([mh.hash_texts(texts)]), threshold=0.5)
    keep = ~cl.column("dropped").to_numpy(zero_copy_only=False)
    return [t for t, k in zip(texts, keep, strict=True) if k]


def _variant(text: str, rng: random.Random, words: int) -> str:
    w = text.split(" ")
    for _ in range(words):
        w[rng.randrange(len(w))] = f"zq{rng.randrange(10**6)}"
    return " ".join(w)


def _planted(originals: list[str], seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    base = originals[:200]
    texts = list(base)
    for k, t in enumerate(base):
        if k % 3 == 0:
            texts.append(_variant(t, rng, 1))
        if k % 5 == 1:
            texts.append(_variant(t, rng, 2))
        if k % 17 == 2:
            texts.append(t)
    texts += [base[4]] * 25  # one bucket of copies bigger than the window
    rng.shuffle(texts)
    cuts = sorted(rng.sample(range(1, len(texts)), N_SHARDS - 1))
    return [texts[a:b] for a, b in zip([0, *cuts], [*cuts, len(texts)], strict=True)]


def _score(shards: list[list[str]], cfg: mh.Config | None = None) -> list[pa.Table]:
    return [mh.hash_texts(pa.array(s, pa.large_string()), cfg) for s in shards]


def _cands(scored: list[pa.Table], rows: list[np.ndarray] | None = None) -> pa.Table:
    return pa.concat_tables(mh.candidates(t, s, None if rows is None else rows[s])
                            for s, t in enumerate(scored))


def _in_play(scored: list[pa.Table]) -> list[np.ndarray]:
    """Every row but every 11th (those failed a document rule: no candidates)."""
    return [np.flatnonzero(np.arange(len(t)) % 11 != 5) for t in scored]


def _annotations(cl: pa.Table, n: int) -> tuple[list[Any], list[Any], np.ndarray]:
    """What the filter stage wrote for one shard from its rows of ``minhash.clusters``."""
    rows = cl.column("row").to_numpy()
    cluster = np.full(n, None, dtype=object)
    size = np.zeros(n, dtype=np.int64)
    cluster[rows] = [f"{s}:{r}" for s, r in zip(cl.column("cluster_shard").to_pylist(),
                                                cl.column("cluster_row").to_pylist(), strict=True)]
    size[rows] = cl.column("cluster_size").to_numpy()
    dropped = np.zeros(n, dtype=bool)
    dropped[rows] = cl.column("dropped").to_numpy(zero_copy_only=False)
    return cluster.tolist(), np.where(size > 0, size, None).tolist(), dropped


def seen_near(cands: pa.Table, parts: list[dict[str, Any]], threshold: float) -> pa.Table:
    """(shard, row) of the candidates sharing a band key (any band: the keys of all bands in
    one pool, as the SQL join had them) with an index document whose estimated Jaccard with
    it is >= ``threshold``; index files without MinHash columns are skipped."""
    pool: dict[int, set[int]] = {}
    sigs = []
    for f in (f for p in parts for f in p["files"]):
        t = pq.read_table(f)
        if mh.SIG_COLUMN not in t.column_names:
            continue
        for b, sig in zip(mh._matrix(t.column(mh.BANDS_COLUMN), np.uint64),
                          mh._matrix(t.column(mh.SIG_COLUMN), np.uint32), strict=True):
            for k in b.tolist():
                pool.setdefault(k, set()).add(len(sigs))
            sigs.append(sig)
    cb = mh._matrix(cands.column("bands"), np.uint64)
    cs = mh._matrix(cands.column("sig"), np.uint32)
    hit = [i for i in range(len(cands)) if any(
        (sigs[j] == cs[i]).sum() >= threshold * cs.shape[1] - 1e-9
        for j in set().union(*(pool.get(k, set()) for k in cb[i].tolist())))]
    return cands.select(["shard", "row"]).take(pa.array(hit, pa.int64()))


def today(scored: list[pa.Table], rows: list[np.ndarray], threshold: float = 0.8,
          parts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per shard: reason, cluster and size per row, as the in-process path decided them."""
    keys = _cands(scored, rows)
    reasons = [np.full(len(t), "", dtype=object) for t in scored]
    if parts:
        seen = seen_near(keys, parts, threshold)
        for s, r in zip(seen.column("shard").to_pylist(), seen.column("row").to_pylist(),
                        strict=True):
            reasons[s][r] = rule.SEEN
        hit = set(zip(seen.column("shard").to_pylist(), seen.column("row").to_pylist(),
                      strict=True))
        keep = [p not in hit for p in zip(keys.column("shard").to_pylist(),
                                          keys.column("row").to_pylist(), strict=True)]
        keys = keys.filter(pa.array(keep))
    cl = mh.clusters(keys, threshold=threshold)
    shard_col = cl.column("shard").to_numpy()
    out = []
    for s, t in enumerate(scored):
        cluster, size, dropped = _annotations(cl.filter(pa.array(shard_col == s)), len(t))
        reasons[s][dropped & (reasons[s] == "")] = rule.RULE
        out.append({"reason": reasons[s].tolist(), "cluster": cluster, "size": size})
    return out


def run_rule(scored: list[pa.Table], rows: list[np.ndarray], tmp: Path,
             cfg: mh.Config | None = None, mapper: Any = serial_map,
             parts: list[dict[str, Any]] | None = None, file_order: list[int] | None = None,
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """keys per shard -> key files -> decide -> decision files -> annotate, per shard."""
    cfg = cfg or mh.Config()
    key_files = []
    for s, t in enumerate(scored):
        k = rule.keys(t, s, rows[s], cfg, None)
        # rows in any order within a key file: decisions must not depend on it
        k = k.take(pa.array(np.random.default_rng(s).permutation(len(k))))
        key_files.append(str(decision_path(tmp / "keys", s)))
        Path(key_files[-1]).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(k, key_files[-1])
    if file_order is not None:
        key_files = [key_files[i] for i in file_order]
    ctx = RuleContext(n_shards=len(scored), work_dir=tmp / "work", index_parts=parts or [],
                      map=mapper)
    stats = rule.decide(key_files, tmp / "dec", cfg, ctx)
    out = []
    for s, t in enumerate(scored):
        p = decision_path(tmp / "dec", s)
        dec = pq.read_table(p) if p.is_file() else None
        if dec is not None:
            assert dec.column_names == ["row", "rule", *rule.ANNOTATIONS]
            assert dec.column("row").to_pylist() == sorted(dec.column("row").to_pylist())
        cols = rule.annotate(t, s, dec, rows[s])
        assert {c: a.type for c, a in cols.items()} == rule.ANNOTATIONS
        reason = np.full(len(t), "", dtype=object)
        if dec is not None:
            names = dec.column("rule").to_pylist()
            for r, name in zip(dec.column("row").to_pylist(), names, strict=True):
                reason[r] = name or ""
        out.append({"reason": reason.tolist(),
                    "cluster": cols["near_dedup_cluster"].to_pylist(),
                    "size": cols["near_dedup_cluster_size"].to_pylist()})
    assert not (tmp / "work" / rule.NAME).exists()  # scratch removed
    return out, stats


@pytest.fixture(scope="module")
def planted_scored(originals: list[str]) -> list[pa.Table]:
    return _score(_planted(originals))


@pytest.mark.parametrize("split", [False, True])
def test_same_decisions_as_clusters(planted_scored: list[pa.Table], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, split: bool) -> None:
    if split:  # several key partitions per band and several shard groups
        monkeypatch.setattr(rule, "BAND_BUDGET", 250)
        monkeypatch.setattr(rule, "GROUP_DOCS", 90)
    rows = _in_play(planted_scored)
    want = today(planted_scored, rows)
    got, stats = run_rule(planted_scored, rows, tmp_path)
    assert got == want
    dropped = sum(r == rule.RULE for s in want for r in s["reason"])
    assert dropped > 80  # a corpus worth checking: variants, copies, the big bucket
    assert stats["dropped"] == {rule.RULE: dropped}
    sizes = [z for s in want for z in s["size"] if z]
    assert max(sizes) >= 25
    assert stats["clusters"] == len({c for s in want
                                     for c, z in zip(s["cluster"], s["size"], strict=True)
                                     if z and z > 1})
    assert stats["verified_pairs"] >= dropped and stats["candidate_pairs"] >= stats[
        "verified_pairs"]


def test_deterministic_under_shard_order(planted_scored: list[pa.Table], tmp_path: Path) -> None:
    rows = _in_play(planted_scored)
    a, sa = run_rule(planted_scored, rows, tmp_path / "a")
    b, sb = run_rule(planted_scored, rows, tmp_path / "b", file_order=[2, 0, 3, 1])
    assert a == b and sa == sb
    for s in range(N_SHARDS):
        pa_, pb = decision_path(tmp_path / "a" / "dec", s), decision_path(tmp_path / "b" / "dec", s)
        assert pq.read_table(pa_).equals(pq.read_table(pb))


def test_empty_input(tmp_path: Path) -> None:
    ctx = RuleContext(n_shards=0, work_dir=tmp_path / "work")
    stats = rule.decide([], tmp_path / "dec", mh.Config(), ctx)
    assert stats == {"candidate_pairs": 0, "verified_pairs": 0, "clusters": 0, "dropped": {}}
    assert not (tmp_path / "dec").exists() or not list((tmp_path / "dec").iterdir())
    # shards whose rows all failed the document rules: empty key files
    scored = _score([["a b c d e f"], ["g h i j k l"]])
    got, stats = run_rule(scored, [np.zeros(0, np.int64)] * 2, tmp_path / "x")
    assert stats["dropped"] == {} and stats["clusters"] == 0
    assert got == [{"reason": [""], "cluster": [None], "size": [None]}] * 2
    # and an empty index changes nothing
    got, _ = run_rule(scored, [np.arange(1)] * 2, tmp_path / "y", parts=[])
    assert [g["cluster"] for g in got] == [["0:0"], ["1:0"]]


def test_all_singletons(originals: list[str], tmp_path: Path) -> None:
    shards = [originals[0:60], originals[60:100], originals[100:150]]
    scored = _score(shards)
    rows = [np.arange(len(s)) for s in shards]
    got, stats = run_rule(scored, rows, tmp_path)
    assert got == today(scored, rows)
    assert stats["clusters"] == 0 and stats["dropped"] == {}
    assert not list((tmp_path / "dec").glob("*.parquet"))
    assert got[1]["cluster"][:3] == ["1:0", "1:1", "1:2"] and set(got[2]["size"]) == {1}


def test_small_config_and_mismatched_keys(originals: list[str], tmp_path: Path) -> None:
    cfg = mh.Config(num_perm=64, bands=16, rows=4, threshold=0.7)
    scored = _score(_planted(originals[:90], seed=3), cfg)
    rows = [np.arange(len(t)) for t in scored]
    got, _ = run_rule(scored, rows, tmp_path, cfg)
    assert got == today(scored, rows, threshold=0.7)
    k = rule.keys(scored[0], 0, rows[0], cfg)
    assert k.column_names[:3] == ["shard", "row", "band_000"] and k.column_names[-1] == "sig"
    with pytest.raises(ValueError, match="bands"):
        rule.keys(scored[0], 0, rows[0], mh.Config())


def _index_parts(originals: list[str], tmp: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Two index parts (earlier runs' kept docs: MinHash keys of originals 0-119) and one
    part of a run without MinHash (no such columns: ignored)."""
    old = _score([originals[:70], originals[70:120]])
    files = []
    for i, t in enumerate(old):
        f = tmp / "index" / f"part-{i}.parquet"
        f.parent.mkdir(parents=True, exist_ok=True)
        extra = pa.array(np.arange(len(t), dtype=np.uint64))
        pq.write_table(t.select([mh.BANDS_COLUMN, mh.SIG_COLUMN]).append_column("h", extra), f)
        files.append(str(f))
    other = tmp / "index" / "no-minhash.parquet"
    pq.write_table(pa.table({"h": pa.array([1, 2], pa.uint64())}), other)
    return [{"files": files[:1]}, {"files": [files[1], str(other)]}], originals[:120]


def test_index_path_equals_seen_near(originals: list[str], tmp_path: Path) -> None:
    parts, indexed = _index_parts(originals, tmp_path)
    rng = random.Random(11)
    # new run: copies and variants of indexed docs, new docs, and near-dups among new docs
    new = [indexed[i] for i in range(0, 120, 9)] + [_variant(indexed[i], rng, 1)
                                                     for i in range(3, 120, 7)]
    fresh = originals[150:230]
    new += fresh + [_variant(t, rng, 1) for t in fresh[::4]] + [fresh[1]] * 3
    rng.shuffle(new)
    shards = [new[:50], new[50:90], new[90:]]
    scored = _score(shards)
    rows = _in_play(scored)
    got, stats = run_rule(scored, rows, tmp_path / "run", parts=parts)
    assert got == today(scored, rows, parts=parts)
    assert stats["dropped"][rule.SEEN] >= 20  # copies and one-word variants of indexed docs
    assert stats["dropped"].get(rule.RULE, 0) >= 15  # near-dups among the new docs too


def test_runs_in_dask_tasks(planted_scored: list[pa.Table], originals: list[str],
                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    monkeypatch.setattr(rule, "GROUP_DOCS", 150)  # several shard groups, as at scale
    parts, _ = _index_parts(originals, tmp_path)
    rows = _in_play(planted_scored)
    ran: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:

        def dask_map(fn: Any, jobs: Any) -> list[Any]:
            ran.append(fn.__name__)
            return client.gather([client.submit(fn, *a, pure=False) for a in jobs])

        with get_task_stream(client) as stream:
            got, stats = run_rule(planted_scored, rows, tmp_path / "run", mapper=dask_map,
                                  parts=parts)
        workers = set(client.scheduler_info()["workers"])
    rounds = ["band_task", "sig_task", "verify_task"]
    assert ran == ["split_task", *rounds, *rounds]  # the index's keys; seen-before; near
    done = [t for t in stream.data if t["key"].startswith(tuple(ran))]
    assert len(done) >= 30 and {t["worker"] for t in done} <= workers
    assert got == today(planted_scored, rows, parts=parts)
    assert stats["dropped"][rule.RULE] > 20 and stats["dropped"][rule.SEEN] > 50
