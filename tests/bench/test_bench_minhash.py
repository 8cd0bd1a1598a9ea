"""MinHash near-dedup vs datatrove's, on a corpus with planted near-duplicates of known Jaccard.

Corpus: real documents (``make corpus``'s JSONL, else the sample) with at least 60 words, made
near-duplicate-free first (one per cluster at Jaccard >= 0.5). Then for a share of them a
*variant* is planted: each word replaced, with probability ``p`` (0.01 to 0.4), by a word from
another document. The true Jaccard of each (original, variant) pair is computed exactly on the
sets of 5-word shingles (lowercased ``\\w+`` words, the definition both sides use), and the
documents are shuffled.

A planted pair counts as found when exactly one of its two documents is removed. At Jaccard
>= 0.8: **recall** = found pairs / planted pairs with J >= 0.8; **precision** = removals that
are one member of a planted J >= 0.8 pair / all removals (a removal of a J < 0.8 variant, or of
any other document, is a false positive).

Both sides at their defaults: datamill 50 bands x 5 rows (250 hashes), verified at estimated
Jaccard >= 0.8; datatrove 14 buckets x 8 hashes (112 hashes), no verification step (its S-curve
sits at ~0.72). datatrove runs its four-stage pipeline (signatures, buckets, clusters, filter)
with one task per stage in its own virtualenv (``.bench-venv``, as the filter benchmark); the
time is the four stages' wall time, without interpreter start. datamill's time is signatures
(``minhash.hash_texts``) + clusters (``minhash.clusters``) in this process, one core.

Peak RSS of datamill's dedup (signatures + clusters; the texts streamed in batches, never all
held) is measured in a child process at 1x and 4x corpus size.

Knobs: ``DATAMILL_BENCH_MINHASH_DOCS`` (base documents, default 4000).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from test_bench_filters import BENCH_DATA, SAMPLE, datatrove_python

SPEED_TARGET = 3.0
QUALITY_TARGET = 0.95
_WORD = re.compile(r"\w+")

DATATROVE_SCRIPT = r'''
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter

inp, work, out = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = MinhashConfig()
stages = [
    [JsonlReader(inp), MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg)],
    [MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets",
                         config=cfg)],
    [MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove",
                         config=cfg)],
    [JsonlReader(inp), MinhashDedupFilter(
        input_folder=f"{work}/remove",
        exclusion_writer=JsonlWriter(f"{work}/removed", compression=None))],
]
tasks = [1, cfg.num_buckets, 1, 1]
seconds = []
for i, (pipe, n) in enumerate(zip(stages, tasks)):
    t0 = time.perf_counter()
    LocalPipelineExecutor(pipeline=pipe, tasks=n, workers=1,
                          logging_dir=f"{work}/logs{i}").run()
    seconds.append(time.perf_counter() - t0)
import glob
removed = []
for f in sorted(glob.glob(f"{work}/removed/*.jsonl")):
    with open(f) as fh:
        removed += [json.loads(line)["id"] for line in fh]
json.dump({"seconds": seconds, "removed": removed}, open(out, "w"))
'''


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = _WORD.findall(text.lower())
    if len(w) < n:
        return {tuple(w)}
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(1, len(sa | sb))


def base_docs(limit: int) -> list[str]:
    files = sorted((BENCH_DATA / "jsonl").glob("*.jsonl*")) if BENCH_DATA.is_dir() else []
    texts: list[str] = []
    if files:
        import gzip

        per = limit * 2 // len(files) + 1
        for f in files:
            with (gzip.open(f, "rt", encoding="utf-8") if f.suffix == ".gz"
                  else f.open(encoding="utf-8")) as fh:
                taken = 0
                for line in fh:
                    if taken >= per:
                        break
                    t = json.loads(line).get("text") or ""
                    if len(_WORD.findall(t)) >= 60:
                        texts.append(t)
                        taken += 1
    else:
        for line in SAMPLE.read_text(encoding="utf-8").splitlines():
            t = json.loads(line)["text"]
            if len(_WORD.findall(t)) >= 60:
                texts.append(t)
    # near-duplicate-free base: one document per cluster at estimated Jaccard >= 0.5
    from tasks.filters import minhash

    cfg = minhash.Config()
    keys = minhash.hash_texts(texts, cfg)
    cl = minhash.clusters(pa.table({"shard": pa.array(np.zeros(len(texts), np.int32)),
                                    "row": pa.array(np.arange(len(texts), dtype=np.int64)),
                                    "bands": keys.column(minhash.BANDS_COLUMN),
                                    "sig": keys.column(minhash.SIG_COLUMN)}), threshold=0.5)
    keep = ~cl.column("dropped").to_numpy(zero_copy_only=False)
    return [t for t, k in zip(texts, keep, strict=True) if k][:limit]


def planted_corpus(n_base: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict]]:
    rng = np.random.default_rng(seed)
    texts = base_docs(n_base)
    docs = [{"id": f"b{i}", "text": t} for i, t in enumerate(texts)]
    vocab = [w for t in texts[:200] for w in t.split()]
    pairs = []
    for i in rng.choice(len(texts), size=len(texts) // 3, replace=False):
        p = float(rng.choice([0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25, 0.4]))
        words = texts[i].split(" ")
        swap = rng.random(len(words)) < p
        for j in np.flatnonzero(swap):
            words[j] = vocab[rng.integers(len(vocab))]
        variant = " ".join(words)
        vid = f"v{i}"
        docs.append({"id": vid, "text": variant})
        pairs.append({"a": f"b{i}", "b": vid, "jaccard": jaccard(texts[i], variant)})
    order = rng.permutation(len(docs))
    return [docs[k] for k in order], pairs


def quality(removed: set[str], pairs: list[dict], threshold: float = 0.8) -> dict[str, float]:
    true_pairs = [p for p in pairs if p["jaccard"] >= threshold]
    found = [p for p in true_pairs if (p["a"] in removed) != (p["b"] in removed)]
    good = {p["a"] if p["a"] in removed else p["b"] for p in found}
    return {"recall": len(found) / max(1, len(true_pairs)),
            "precision": len(good) / max(1, len(removed)), "removed": len(removed),
            "true_pairs": len(true_pairs)}


def datamill_dedup(docs: list[dict[str, Any]]) -> tuple[set[str], float]:
    from tasks.filters import minhash

    cfg = minhash.Config()
    texts = [d["text"] for d in docs]
    minhash.hash_texts(texts[:50], cfg)  # warm-up
    t0 = time.perf_counter()
    keys = minhash.hash_texts(texts, cfg)
    cl = minhash.clusters(pa.table({"shard": pa.array(np.zeros(len(texts), np.int32)),
                                    "row": pa.array(np.arange(len(texts), dtype=np.int64)),
                                    "bands": keys.column(minhash.BANDS_COLUMN),
                                    "sig": keys.column(minhash.SIG_COLUMN)}),
                          threshold=cfg.threshold)
    seconds = time.perf_counter() - t0
    dropped = cl.column("dropped").to_numpy(zero_copy_only=False)
    return {d["id"] for d, x in zip(docs, dropped, strict=True) if x}, seconds


RSS_CHILD = r'''
import itertools, json, resource, sys
import numpy as np, pyarrow as pa
sys.path.insert(0, sys.argv[3])
from tasks.filters import minhash
cfg = minhash.Config()

def texts():  # streamed from disk, `scale` passes: only the keys stay in memory
    for _ in range(int(sys.argv[2])):
        with open(sys.argv[1], encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["text"]

sig, bands, n, it = [], [], 0, texts()
while batch := list(itertools.islice(it, 2000)):
    k = minhash.hash_texts(batch, cfg)
    sig += k.column(minhash.SIG_COLUMN).chunks
    bands += k.column(minhash.BANDS_COLUMN).chunks
    n += len(batch)
cl = minhash.clusters(pa.table({"shard": pa.array(np.zeros(n, np.int32)),
    "row": pa.array(np.arange(n, dtype=np.int64)),
    "bands": pa.chunked_array(bands), "sig": pa.chunked_array(sig)}))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"docs": n, "max_rss_mb": rss}))
'''


def peak_rss(docs: list[dict[str, Any]], scale: int, tmp: Path) -> dict[str, float]:
    path = tmp / "rss.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d["text"]}) + "\n")
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path), str(scale), root],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_minhash_vs_datatrove(tmp_path: Path, table: Callable[..., str]) -> None:
    n_base = int(os.environ.get("DATAMILL_BENCH_MINHASH_DOCS", "4000"))
    docs, pairs = planted_corpus(n_base)
    n = len(docs)
    inp = tmp_path / "in"
    inp.mkdir()
    with (inp / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")

    dm_removed, dm_s = datamill_dedup(docs)
    py = datatrove_python()
    script = tmp_path / "dt_minhash.py"
    script.write_text(DATATROVE_SCRIPT, encoding="utf-8")
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(py), str(script), str(inp), str(tmp_path / "dt"),
                           str(tmp_path / "dt.json")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    dt = json.loads((tmp_path / "dt.json").read_text())
    dt_s = sum(dt["seconds"])
    dt_removed = set(dt["removed"])

    qm, qd = quality(dm_removed, pairs), quality(dt_removed, pairs)
    bins = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]
    rows = []
    for lo, hi in bins:
        sel = [p for p in pairs if lo <= p["jaccard"] < hi]
        def rate(removed: set[str], sel: list[dict] = sel) -> str:
            hit = sum((p["a"] in removed) != (p["b"] in removed) for p in sel)
            return f"{hit}/{len(sel)}"
        rows.append([f"J in [{lo:.1f}, {min(hi, 1.0):.1f})", len(sel), rate(dm_removed),
                     rate(dt_removed)])
    print(f"\nplanted corpus: {n} docs ({n - len(pairs)} base + {len(pairs)} variants); "
          f"pairs found per true-Jaccard bin (datamill / datatrove):")
    print(table(["bin", "pairs", "datamill", "datatrove"], rows))
    ratio = (n / dm_s) / (n / dt_s)
    print()
    print(table(
        ["system", "docs/s", "recall@0.8", "precision@0.8", "removed", "target"],
        [["datamill (50x5, verified 0.8)", f"{n / dm_s:,.0f}", f"{qm['recall']:.3f}",
          f"{qm['precision']:.3f}", qm["removed"],
          "PASS" if qm["recall"] >= QUALITY_TARGET and qm["precision"] >= QUALITY_TARGET
          else "MISS"],
         ["datatrove (14x8)", f"{n / dt_s:,.0f}", f"{qd['recall']:.3f}",
          f"{qd['precision']:.3f}", qd["removed"], ""]]))
    print(f"\nspeed: datamill {ratio:.1f}x datatrove (target {SPEED_TARGET:.0f}x: "
          f"{'PASS' if ratio >= SPEED_TARGET else 'MISS'}); datatrove stages "
          f"{', '.join(f'{s:.1f}s' for s in dt['seconds'])}")
    small, big = peak_rss(docs, 1, tmp_path), peak_rss(docs, 4, tmp_path)
    print(f"peak RSS of datamill's dedup: {small['docs']:,} docs {small['max_rss_mb']:.0f} MB, "
          f"{big['docs']:,} docs {big['max_rss_mb']:.0f} MB "
          f"({big['max_rss_mb'] / small['max_rss_mb']:.2f}x for 4x the documents)")
    assert qm["true_pairs"] > 50 and dm_removed  # a corpus worth measuring, and decisions made
