"""The report's figures (tasks/plots.py): the numbers behind each one, checked against the
filter's outputs and the evaluate stage's items, and the PNGs they draw."""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_inspect import build_run

from tasks import inspect as ins
from tasks import plots


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_run(tmp_path_factory.mktemp("mini-plots"))


def _rows(folder: Path, part: str) -> list[dict[str, Any]]:
    return pa.concat_tables([pq.read_table(p) for p in sorted((folder / part).glob("*.parquet"))]
                            ).to_pylist()


def _is_png(png: bytes | None) -> None:
    from PIL import Image

    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png)).convert("L")
    assert img.width > 300 and img.height > 100
    assert len(set(img.getdata())) > 8  # something was drawn, not a blank canvas


def test_histogram_counts_every_document(mini: dict[str, Any]) -> None:
    folder = ins.stage_dir(mini, "filter")
    assert folder is not None
    m = ins.load_manifest(folder)
    data = plots.histogram_data(folder, m)
    kept, rej = _rows(folder, "kept"), _rows(folder, "rejected")
    n = m["docs_in"]
    nw = data["gopher_quality_n_words"]
    assert nw["rules"] == ["gopher_quality.max_words", "gopher_quality.min_words"]
    assert nw["thresholds"] == [50.0, 100000.0] and nw["scale"]["value"] in ("log", "symlog")
    for col, h in data.items():
        total = sum(int(c.sum()) for c in h["counts"].values()) + h["nulls"]
        assert total == n, col
        valid = [r for r in rej if r[col] is not None and not math.isnan(r[col])]
        own = sum(1 for r in valid if r["reject_reason"] in h["rules"])
        assert int(h["counts"][plots.OWN].sum()) == own
        assert int(h["counts"]["kept"].sum()) == sum(1 for r in kept if r[col] is not None
                                                     and not math.isnan(r[col]))
    # the top_k rule shares its column with gopher's alpha_words rule: one panel, both rules
    alpha = data["gopher_quality_alpha_words_frac"]
    assert set(alpha["rules"]) == {"gopher_quality.alpha_words", "top_k.below_cut"}
    _is_png(plots.score_histograms(folder, m))


def test_corpus_bytes_per_source_and_language(mini: dict[str, Any]) -> None:
    folder = ins.stage_dir(mini, "ingest")
    assert folder is not None
    files = ins.outputs(folder, ins.load_manifest(folder), "kept")
    got = plots.corpus_bytes(files)
    want: dict[str, Counter[str]] = {"source": Counter(), "lang": Counter()}
    docs: Counter[str] = Counter()
    for f in files:
        for r in pq.read_table(f).to_pylist():
            want["source"][r["source"]] += len(r["text"].encode("utf-8"))
            want["lang"][r["lang"] or "(none)"] += len(r["text"].encode("utf-8"))
            docs[r["source"]] += 1
    assert {k: v[1] for k, v in got["source"].items()} == dict(want["source"])
    assert {k: v[1] for k, v in got["lang"].items()} == dict(want["lang"])
    assert {k: v[0] for k, v in got["source"].items()} == dict(docs)


def test_figures_of_a_run_without_evaluation(mini: dict[str, Any]) -> None:
    figs = plots.figures(mini)
    assert [f.key for f in figs] == ["score-histograms", "corpus-size"]
    for f in figs:
        _is_png(f.png)


def _eval_run(tmp_path: Path, seeds: int, items: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    stages, evals = [], []
    docs = [(f"d{i}", "web" if i % 2 else "wiki") for i in range(40)]
    for s in range(seeds):
        folder = tmp_path / "stages" / "evaluate" / f"e{s}"
        folder.mkdir(parents=True)
        bits = rng.uniform(500, 1500, len(docs))
        nbytes = rng.uniform(400, 800, len(docs))
        if items:
            pq.write_table(pa.table({
                "task": ["heldout"] * len(docs), "metric": ["bpb"] * len(docs),
                "item_id": [d for d, _ in docs], "source": [src for _, src in docs],
                "num": bits, "den": nbytes, "checkpoint": ["final"] * len(docs)}),
                folder / "items.parquet")
        stages.append({"stage": "evaluate", "version": f"e{s}", "output_path": str(folder)})
        ck = f"/x/train/s{s}/checkpoint"
        evals.append({"seed": s, "checkpoint": ck, "task": "heldout", "metric": "bpb",
                      "value": float(bits.sum() / nbytes.sum())})
        for src in ("web", "wiki"):
            sel = np.array([d[1] == src for d in docs])
            evals.append({"seed": s, "checkpoint": ck, "task": f"heldout/{src}",
                          "metric": "bpb", "value": float(bits[sel].sum() / nbytes[sel].sum())})
        evals.append({"seed": s, "checkpoint": f"/x/train/s{s}/checkpoints/step-2",
                      "task": "heldout", "metric": "bpb", "value": 99.0})  # not the final
    (tmp_path / "manifest.json").write_text(json.dumps({}))
    return {"run_id": "e", "stages": stages, "evals": evals}


def test_bpb_rows_intervals(tmp_path: Path) -> None:
    run = _eval_run(tmp_path / "a", seeds=2, items=True)
    rows = {r["split"]: r for r in plots.bpb_rows(run)}
    assert list(rows) == ["heldout", "heldout/web", "heldout/wiki"]
    for split, r in rows.items():
        vals = [e["value"] for e in run["evals"] if e["task"] == split and e["value"] != 99.0]
        assert r["bpb"] == pytest.approx(np.mean(vals)) and r["seeds"] == 2
        assert r["low"] < r["bpb"] < r["high"]
        assert r["docs"] == (40 if split == "heldout" else 20)
    # without items: the seeds' t interval; one seed and no items: no interval
    bare = _eval_run(tmp_path / "b", seeds=2, items=False)
    r = plots.bpb_rows(bare)[0]
    v = [e["value"] for e in bare["evals"] if e["task"] == "heldout" and e["value"] != 99.0]
    half = 12.7062047 * np.std(v, ddof=1) / math.sqrt(2)  # t(0.975, 1 df)
    assert r["low"] == pytest.approx(np.mean(v) - half, rel=1e-5) and r["docs"] is None
    one = plots.bpb_rows(_eval_run(tmp_path / "c", seeds=1, items=False))[0]
    assert one["low"] is None and one["high"] is None
    _is_png(plots.bpb_chart(plots.bpb_rows(run)))
    assert [f.key for f in plots.figures(run)] == ["bpb-by-source"]


def test_labels_are_inert() -> None:
    assert plots.label("$\\frac{1}{0}$ a\nb\x1b") == "\\$\\frac{1}{0}\\$ a b\ufffd"
    # a source named like mathtext draws as text instead of failing the figure
    _is_png(plots.bpb_chart([{"split": "heldout/$\\notacommand$", "bpb": 1.0, "low": None,
                              "high": None}, {"split": "heldout", "bpb": 1.2, "low": 1.1,
                                              "high": 1.3}]))
