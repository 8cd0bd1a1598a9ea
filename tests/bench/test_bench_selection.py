"""Model-based selection: scoring speed on 2 cores, training time, and what each selector
finds on a corpus where the answer is known.

- **Speed.** The sample's documents repeated ``3 x DATAMILL_BENCH_SCALE`` times (20,223 at the
  default): DSIR scoring (features + importance weight) by datamill's vectorised code and by
  the authors' ``data-selection`` package (1.0.3, in its own virtualenv
  ``.datamill/bench/dsir-venv``, made on first use; ``DATAMILL_BENCH_DSIR_PY`` names another
  interpreter), and fastText scoring with a model trained here with DCLM's defaults on the same
  documents. Each is timed in 2 worker processes over halves of the documents (docs/s on 2
  cores = documents / the slower worker's seconds, model loading excluded) and in this
  process alone (docs per CPU-second). Training time: threads 1 and 2.
- **Selection.** Pool: the sample's English documents on even lines, software documentation
  (PostgreSQL, Python, Django, Apache, Debian) planted among encyclopedia summaries and
  dictionary entries; target/reference: the documentation pages on odd lines. Each selector
  keeps as many documents as were planted; the share of planted documents among them is
  precision (= recall, at that k). DSIR also reports the paper's KL measure.

Timings are printed, never asserted; the assertions are correctness (every document scored,
selections of the asked size).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import selectkit as sk

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"
DS_VENV = ROOT / ".datamill" / "bench" / "dsir-venv"
DS_PINS = ["data-selection==1.0.3"]
SOFTWARE = {"postgresql-docs", "python-docs", "django-docs", "apache-httpd-docs",
            "debian-handbook"}
BATCH = 5_000

DS_SCRIPT = r'''
"""The data-selection package's own functions: hashed n-gram counts per document and the
importance weight np.inner(counts, log_diff), as HashedNgramDSIR.importance_estimator."""
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from data_selection.hashed_ngram_dsir import get_ngram_counts, wpt

def counts(texts):
    c = np.zeros(10000, dtype=int)
    for t in texts:
        c = get_ngram_counts(t, n=2, num_buckets=10000, counts=c, tokenizer=wpt.tokenize)
    return c

def weights(args):
    texts, log_diff = args
    t0 = time.perf_counter()
    w = [float(np.inner(get_ngram_counts(t, n=2, num_buckets=10000, tokenizer=wpt.tokenize),
                        log_diff)) for t in texts]
    return w, time.perf_counter() - t0

def log_diff(target, raw):
    t, r = counts(target), counts(raw)
    return np.log(t / t.sum() + 1e-8) - np.log(r / r.sum() + 1e-8)

def main(path, out):
    job = json.load(open(path))
    speed = job["speed"]
    ld = log_diff(job["target"], speed)
    half = len(speed) // 2
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(weights, [(speed[:half], ld), (speed[half:], ld)]))
    c0 = time.process_time()
    weights((speed[:2000], ld))
    cpu = time.process_time() - c0
    pool_ld = log_diff(job["target"], job["pool"])
    w, _ = weights((job["pool"], pool_ld))
    json.dump({"docs": len(speed), "two_core_s": max(p[1] for p in parts),
               "cpu_per_doc": cpu / 2000, "pool_weights": w}, open(out, "w"))

main(sys.argv[1], sys.argv[2])
'''


def _docs() -> list[dict[str, Any]]:
    return [json.loads(x) for x in SAMPLE.read_text().splitlines()]


def ds_python() -> Path:
    explicit = os.environ.get("DATAMILL_BENCH_DSIR_PY")
    if explicit:
        return Path(explicit)
    py = DS_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import data_selection"],
                                      capture_output=True).returncode == 0:
        return py
    base = shutil.which("python3.11") or shutil.which("python3") or sys.executable
    print(f"\ncreating {DS_VENV} with {' '.join(DS_PINS)} ...", flush=True)
    try:
        DS_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([base, "-m", "venv", str(DS_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *DS_PINS], check=True)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"could not set up {DS_VENV} (offline?): {e}")
    return py


# ------------------------------------------------------------------ workers (2 processes)

def _dsir_worker(texts: list[str], log_diff: np.ndarray) -> float:
    from tasks.select import features as fx

    arr = pa.array(texts, pa.large_string())
    t0 = time.perf_counter()
    for i in range(0, len(arr), BATCH):
        fx.doc_sums(fx.hashed_ngrams(arr.slice(i, BATCH)), log_diff)
    return time.perf_counter() - t0


def _ft_worker(texts: list[str], model_path: str) -> float:
    from tasks.select import fasttext_model as ftm

    model = ftm.load(model_path)  # loading is not timed
    arr = pa.array(texts, pa.large_string())
    t0 = time.perf_counter()
    for i in range(0, len(arr), BATCH):
        ftm.positive_proba(model, arr.slice(i, BATCH))
    return time.perf_counter() - t0


def _two_cores(fn: Any, texts: list[str], arg: Any) -> float:
    half = len(texts) // 2
    with ProcessPoolExecutor(2) as pool:
        secs = list(pool.map(fn, [texts[:half], texts[half:]], [arg, arg]))
    return len(texts) / max(secs)


def _cpu_rate(fn: Any, texts: list[str], arg: Any) -> float:
    c0 = time.process_time()
    fn(texts, arg)
    return len(texts) / (time.process_time() - c0)


# ------------------------------------------------------------------ the benchmark

def _train(lines: list[tuple[str, str]], work: Path, **kw: Any) -> tuple[str, float]:
    from tasks.select import fasttext_model as ftm

    ft = ftm.fasttext_trainer()
    rng = np.random.default_rng(0)
    path = work / "train.txt"
    flat = ftm.one_line(pa.array([t for _, t in lines], pa.large_string())).to_pylist()
    with open(path, "w") as fh:
        for i in rng.permutation(len(lines)):
            if flat[i]:
                fh.write(f"{lines[i][0]} {flat[i]}\n")
    params = {"lr": 0.1, "dim": 100, "ws": 5, "epoch": 5, "minCount": 1, "wordNgrams": 2,
              **kw}
    t0 = time.perf_counter()
    model = ft.train_supervised(input=str(path), verbose=0, seed=0, **params)
    secs = time.perf_counter() - t0
    out = str(work / f"model-{kw.get('thread', 1)}.bin")
    model.save_model(out)
    return out, secs


def _precision(ids: list[str], scores: np.ndarray, planted: set[str], k: int) -> float:
    top = np.argsort(-scores, kind="stable")[:k]
    return len({ids[i] for i in top} & planted) / k


def test_selection_bench(tmp_path: Path, bench_scale: int, bench_out: Path, table: Any) -> None:
    from tasks import filter as filter_lib
    from tasks.corpus.base import RuleContext
    from tasks.select import dsir
    from tasks.select import fasttext_model as ftm
    from tasks.select import features as fx
    from tasks.store import write_parquet

    docs = _docs()
    speed = [d["text"] for d in docs] * (3 * bench_scale)
    pool = [d for i, d in enumerate(docs) if i % 2 == 0 and d["lang"] == "en"]
    ref = [d["text"] for i, d in enumerate(docs) if i % 2 and d["lang"] == "en"
           and d["source"] in SOFTWARE]
    planted = {d["id"] for d in pool if d["source"] in SOFTWARE}
    ids = [d["id"] for d in pool]
    k = len(planted)
    results: dict[str, Any] = {"speed_docs": len(speed), "pool": len(pool), "planted": k,
                               "reference": len(ref)}
    rows = []

    # --- DSIR, datamill: a log-ratio vector fit on the speed corpus, then score it
    B = 10_000
    raw = fx.counts(fx.hashed_ngrams(pa.array(speed, pa.large_string())), B)
    tgt = fx.counts(fx.hashed_ngrams(pa.array(ref, pa.large_string())), B)
    log_diff = dsir.log_probs(tgt) - dsir.log_probs(raw)
    mine2 = _two_cores(_dsir_worker, speed, log_diff)
    mine1 = _cpu_rate(_dsir_worker, speed[:BATCH * 2], log_diff)
    rows.append(["DSIR scoring, datamill (vectorised)", f"{mine2:,.0f}", f"{mine1:,.0f}"])

    # --- DSIR, the authors' data-selection package (own venv, subprocess)
    job = tmp_path / "ds-job.json"
    job.write_text(json.dumps({"speed": speed, "target": ref,
                               "pool": [d["text"] for d in pool]}))
    subprocess.run([str(ds_python()), "-c", DS_SCRIPT, str(job), str(tmp_path / "ds.json")],
                   check=True)
    ds = json.loads((tmp_path / "ds.json").read_text())
    rows.append(["DSIR scoring, data-selection 1.0.3", f"{ds['docs'] / ds['two_core_s']:,.0f}",
                 f"{1 / ds['cpu_per_doc']:,.0f}"])

    # --- fastText: train with DCLM's defaults on the speed corpus, then score it
    labelled = [("__label__hq" if d["source"] in SOFTWARE else "__label__cc", d["text"])
                for d in docs] * (3 * bench_scale)
    train_s = {}
    for threads in (1, 2):
        model_path, train_s[threads] = _train(labelled, tmp_path, thread=threads)
    ft2 = _two_cores(_ft_worker, speed, model_path)
    ft1 = _cpu_rate(_ft_worker, speed[:BATCH * 2], model_path)
    rows.append(["fastText scoring (DCLM defaults, 2M buckets)", f"{ft2:,.0f}", f"{ft1:,.0f}"])
    results.update({"dsir_datamill_2core": mine2, "dsir_datamill_cpu": mine1,
                    "dsir_package_2core": ds["docs"] / ds["two_core_s"],
                    "dsir_package_cpu": 1 / ds["cpu_per_doc"], "fasttext_2core": ft2,
                    "fasttext_cpu": ft1, "fasttext_train_s": train_s,
                    "fasttext_model_mb": Path(model_path).stat().st_size / 2**20})
    print(f"\n{len(speed):,} documents (the sample x {3 * bench_scale}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(table(["scoring", "docs/s on 2 cores", "docs per CPU-second"], rows))
    print(f"\nfastText training on {len(labelled):,} documents, DCLM's parameters: "
          f"{train_s[1]:.1f} s (1 thread), {train_s[2]:.1f} s (2 threads); model "
          f"{results['fasttext_model_mb']:.0f} MB")

    # --- selection on the planted corpus
    shard = tmp_path / "pool.parquet"
    write_parquet(pa.table({"id": ids, "text": pa.array([d["text"] for d in pool],
                                                         pa.large_string()),
                            "source": [d["source"] for d in pool],
                            "lang": [d["lang"] for d in pool]}), shard)
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ref))
    qrows = []
    for label, extra in (("DSIR, datamill (128-word chunk weights)", {}),
                         ("DSIR, datamill (whole-document sums)", {"chunk_words": None})):
        cfg = dsir.Config(target={"paths": [str(tmp_path / "ref.jsonl")]}, k=k, **extra)
        scored = str(tmp_path / "scored.parquet")
        filter_lib.score_shard(str(shard), scored, {}, {"dsir": cfg})
        out = tmp_path / f"dsir-{len(qrows)}"
        filter_lib.filter_local([scored], str(out), {}, {"dsir": cfg})
        kept = set(pq.read_table(out / "kept" / "part-00000.parquet",
                                 columns=["id"]).column("id").to_pylist())
        st = dsir.decide([str(out / "corpus" / "0" / "keys" / "part-00000.parquet")],
                         tmp_path / f"again-{len(qrows)}", cfg,
                         RuleContext(n_shards=1, work_dir=tmp_path / "w"))
        assert len(kept) == k
        qrows.append([label, f"{len(kept & planted) / k:.2f}",
                      f"{st['kl_target_raw']:.3f}", f"{st['kl_target_selected']:.3f}",
                      f"{st['kl_target_uniform']:.3f}"])
    w = np.asarray(ds["pool_weights"]) + np.random.default_rng(0).gumbel(size=len(pool))
    qrows.append(["DSIR, data-selection 1.0.3 (sums, Gumbel top-k)",
                  f"{_precision(ids, w, planted, k):.2f}", "", "", ""])
    pool_text = pa.array([d["text"] for d in pool], pa.large_string())
    ref_lines = [("__label__hq", t) for t in ref]
    rng = np.random.default_rng(0)
    negs = [("__label__cc", pool[i]["text"]) for i in rng.permutation(len(pool))[:len(ref)]]
    for label, kw in (("fastText, DCLM defaults", {}),
                      ("fastText, epoch 25, lr 0.5", {"epoch": 25, "lr": 0.5})):
        (tmp_path / "q").mkdir(exist_ok=True)
        mp, _ = _train(ref_lines + negs, tmp_path / "q", thread=1, **kw)
        s = ftm.positive_proba(ftm.load(mp), pool_text)
        assert s.null_count == 0
        qrows.append([label, f"{_precision(ids, s.to_numpy(), planted, k):.2f}", "", "", ""])
    print(f"\nselection: pool {len(pool)} English documents, {k} planted (base rate "
          f"{k / len(pool):.2f}); reference {len(ref)} documents; each keeps k = {k}\n")
    print(table(["selector", "precision = recall", "KL(t||pool)", "KL(t||sel)",
                 "KL(t||uniform k)"], qrows))
    results["selection"] = qrows
    (bench_out / "selection.json").write_text(json.dumps(results, indent=2, default=str))


# ------------------------------------------------------------------ fastText packages (opt-in)

FT_PACKAGES = ["fasttext==0.9.3", "fasttext-wheel==0.9.2", "fasttext-numpy2==0.10.4",
               "fasttext-numpy2-wheel==0.9.2", "fasttext-community==0.11.9",
               "fasttext-modern==0.10.0"]
FT_SCRIPT = r'''
"""One fastText package: numpy-2 compatibility of predict, training and predicting times."""
import json, sys, time, tempfile, os
import numpy as np
import fasttext

docs = [json.loads(x) for x in open(sys.argv[1])]
lines = [" ".join(d["text"].split()) for d in docs] * 9
labels = ["hq" if d["source"] != "wikipedia-summaries" else "cc" for d in docs] * 9
path = os.path.join(tempfile.mkdtemp(), "train.txt")
with open(path, "w") as fh:
    fh.writelines(f"__label__{l} {t}\n" for l, t in zip(labels, lines))
out = {"docs": len(lines)}
c0 = time.process_time()
m = fasttext.train_supervised(input=path, lr=0.1, dim=100, ws=5, epoch=5, minCount=1,
                              wordNgrams=2, thread=1, seed=0, verbose=0)
out["train_cpu_s"] = time.process_time() - c0
for kind, arg in (("str", lines[0]), ("list", lines[:2])):
    try:
        m.predict(arg, k=-1)
        out[f"predict_{kind}"] = "works"
    except Exception as e:
        out[f"predict_{kind}"] = type(e).__name__ + ": " + str(e).splitlines()[0][:60]
c0 = time.process_time()
m.f.multilinePredict([t + "\n" for t in lines], -1, 0.0, "strict")
out["predict_docs_per_cpu_s"] = len(lines) / (time.process_time() - c0)
# stability: one small set (40 lines of 20 words from 50) trained 20 times in this process at
# lr 0.1; a sound build never diverges there
import random
rng = random.Random(0)
words = [f"w{i}" for i in range(50)]
with open(path, "w") as fh:
    fh.writelines(f"__label__{'hq' if i % 2 else 'cc'} "
                  + " ".join(rng.choice(words) for _ in range(20)) + "\n" for i in range(40))
out["nan_of_20"] = 0
for _ in range(20):
    try:
        fasttext.train_supervised(input=path, lr=0.1, epoch=5, thread=1, seed=0, verbose=0)
    except RuntimeError:
        out["nan_of_20"] += 1
print(json.dumps(out))
'''


@pytest.mark.skipif(os.environ.get("DATAMILL_BENCH_FASTTEXT_PACKAGES") != "1",
                    reason="set DATAMILL_BENCH_FASTTEXT_PACKAGES=1: installs each candidate "
                    "in its own virtualenv (fasttext 0.9.3 builds from source, minutes)")
def test_fasttext_packages(tmp_path: Path, table: Any) -> None:
    """Each candidate package alone in a fresh virtualenv with numpy 2.4.6 (what datamill
    pins), timed on the sample x 9 with DCLM's parameters (CPU seconds: steadier on a shared
    machine than wall time)."""
    base = shutil.which("python3.11") or shutil.which("python3") or sys.executable
    rows = []
    for pkg in FT_PACKAGES:
        venv = ROOT / ".datamill" / "bench" / f"ft-{pkg.split('==')[0]}"
        py = venv / "bin" / "python"
        t0 = time.perf_counter()
        if not py.exists():
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy==2.4.6", pkg], check=True)
        install = time.perf_counter() - t0
        got = json.loads(subprocess.run([str(py), "-c", FT_SCRIPT, str(SAMPLE)], check=True,
                                        capture_output=True, text=True).stdout)
        rows.append([pkg, f"{install:.0f}", got["predict_str"], got["predict_list"],
                     f"{got['train_cpu_s']:.1f}", f"{got['predict_docs_per_cpu_s']:,.0f}",
                     f"{got['nan_of_20']}"])
    print(f"\n{got['docs']:,} documents; load average {os.getloadavg()[0]:.1f}\n")
    print(table(["package", "install s", "predict(str)", "predict(list)", "train CPU s",
                 "predict docs/CPU-s", "NaN in 20 small trainings"], rows))


# ------------------------------------------------------------------ proof: selection vs random

def test_selection_beats_random(prefect_harness: None, bench_out: Path, table: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Does selecting toward a target help a model on that target? The target and the pool are
    selectkit's. DSIR and the DCLM fastText classifier each keep 20 % of the pool; a random
    subset of the same size is the baseline. Each recipe runs through the real flow (ingest,
    filter, tokenize, train with ``PROOF_SEEDS`` seeds of the tiny preset, evaluate); every
    model is then scored on the target's held-out documents (``compare --on``'s scoring) and
    ``compare`` says, with its 95 % interval, whether each selection beat random on held-out
    bits per byte."""
    from flows.pipeline import run_recipe

    monkeypatch.setenv("DATAMILL_RAY_CPUS", os.environ.get("DATAMILL_RAY_CPUS", "1"))
    sets = sk.proof_sets(bench_out / "selection-proof")
    root, pct = sets.root, sk.PROOF_PERCENT
    recipes = {
        "dsir": sk.proof_recipe(root / "dsir.yaml", "proof-dsir", root, sets.pool_p,
                                {"dsir": {"target": {"paths": [str(sets.ref_p)]},
                                          "percent": pct}}),
        "fasttext": sk.proof_recipe(
            root / "fasttext.yaml", "proof-fasttext", root, sets.pool_p,
            {"top_k": {"column": "dclm_fasttext_score", "percent": pct}},
            [{"use": "tasks.select.fasttext_stage:DclmFastText", "after": "rewrite",
              "with": {"reference": {"paths": [str(sets.ref_p)]}, "bucket": 200_000}}]),
    }
    t0 = time.perf_counter()
    runs = {name: run_recipe(str(p)) for name, p in recipes.items()}
    shares = {name: sk.kept_sources(root, r["run_id"]) for name, r in runs.items()}
    # both keep ceil(20 %) of the ranked documents; exact dedup (also a corpus rule) may then
    # drop a kept twin, so a selection can end a document or two short
    k = max(n for n, _ in shares.values())
    assert all(k - 2 <= n <= k for n, _ in shares.values()), shares
    runs = {"random": sk.random_baseline(sets, k), **runs}
    build_s = time.perf_counter() - t0
    shares["random"] = sk.kept_sources(root, runs["random"]["run_id"])
    t1 = time.perf_counter()
    rows, res = sk.verdicts(sets, runs, shares)
    report = (sk.header(sets, k, shares) + "\n" + table(sk.HEADERS, rows) + "\n"
              + sk.load_line(build_s, time.perf_counter() - t1))
    print("\n" + report)
    (bench_out / "selection-proof.txt").write_text(report + "\n")
    assert len(rows) == 2, res
