"""Embedding-space selection through the real flow (Prefect, Dask, Ray): the ``embed`` stage
(all-MiniLM-L6-v2, bundled) and the ``clusters`` stage before ``score``, then the filter
stage's corpus rules. The input is the sample slice plus planted paraphrases of some of its
English documents (word substitutions and reordered sentences): SemDeDup finds them at the
stated epsilon with precision and recall asserted; a second recipe that changes only the
decisions (density pruning, cluster-balanced diversity) re-embeds and re-clusters nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow
EPSILON = 0.1  # drop when the cosine similarity to an earlier document exceeds 0.9
PLANTED = 12
SYNONYMS = {"large": "big", "small": "little", "first": "initial", "many": "numerous",
            "also": "additionally", "known": "recognised", "city": "town", "used": "employed",
            "between": "among", "important": "significant",
            "however": "nevertheless", "often": "frequently", "during": "throughout",
            "several": "a number of", "famous": "renowned", "built": "constructed",
            "called": "named", "largest": "biggest", "people": "persons", "area": "region",
            "became": "turned into", "made": "produced", "part": "portion", "main": "chief",
            "world": "globe", "century": "hundred years", "began": "commenced"}


def paraphrase(text: str, seed: int) -> str:
    """Word substitutions from a fixed table and the sentences reordered (the first moved to
    the end, then neighbours swapped)."""
    words = re.sub(r"\b(\w+)\b", lambda m: _swap(m.group(1)), text)
    sents = [s for s in re.split(r"(?<=[.!?])\s+", words.strip()) if s]
    sents = sents[1:] + sents[:1]
    start = seed % 2
    for i in range(start, len(sents) - 1, 2):
        sents[i], sents[i + 1] = sents[i + 1], sents[i]
    return " ".join(sents)


def _swap(word: str) -> str:
    low = word.lower()
    if low not in SYNONYMS:
        return word
    new = SYNONYMS[low]
    return new.capitalize() if word[0].isupper() else new


def pick_planted(docs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """English encyclopedia summaries short enough for the model to see whole (it reads 256
    tokens) and with at least three sentences: the first ``n`` in input order."""
    out = []
    for d in docs:
        words = len(d["text"].split())
        if d["source"] == "wikipedia-summaries" and d["lang"] == "en" and 50 <= words <= 170 \
                and len(re.findall(r"[.!?](\s|$)", d["text"])) >= 3:
            out.append(d)
    return out[:n]


def _recipe(path: Path, base: Path, inputs: Path, corpus: dict[str, Any]) -> Path:
    recipe = yaml.safe_load(base.read_text())
    recipe["input"] = {"paths": [str(inputs)]}
    recipe["stages"]["filter"] = {"corpus": corpus}
    recipe["stages"]["extra"] = [
        {"use": "tasks.select.embed_stage:Embed", "after": "rewrite"},
        {"use": "tasks.select.cluster_stage:Clusters", "after": "embed",
         "with": {"k": 8, "titles": 2}}]
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def runs(prefect_harness: None, sample_slice: Path, tmp_path_factory: pytest.TempPathFactory,
         write_recipe: Any) -> dict[str, Any]:
    pytest.importorskip("tasks.select.embed_stage")
    from flows.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("clusters")
    every = [json.loads(x) for x in sample_slice.read_text().splitlines() if x.strip()]
    # half the slice (embedding is the slow part on a CPU), and its exact copy with the original
    copies = {d["id"].removesuffix("-copy") for d in every if d["id"].endswith("-copy")}
    docs = [d for i, d in enumerate(every)
            if i % 2 == 0 or d["id"] in copies or d["id"].endswith("-copy")]
    planted = pick_planted(docs, PLANTED)
    extra = [{**d, "id": f"{d['id']}-para", "text": paraphrase(d["text"], i)}
             for i, d in enumerate(planted)]
    inputs = tmp / "input.jsonl"
    inputs.write_text("".join(json.dumps(d) + "\n" for d in docs + extra))
    base = write_recipe(tmp / "base.yaml", inputs, tmp / "root")
    first = run_recipe(str(_recipe(tmp / "a.yaml", base, inputs,
                                   {"tasks.select.semdedup": {"epsilon": EPSILON}})),
                       until="filter")
    second = run_recipe(str(_recipe(tmp / "b.yaml", base, inputs, {
        "tasks.select.density": {"percent": 50, "tau": 0.1},
        "tasks.select.diversity": {"percent": 80}})), until="filter")
    pairs = {frozenset((d["id"], f"{d['id']}-para")) for d in planted}
    # the slice's own exact copy is a true near-duplicate too
    pairs |= {frozenset((d["id"].removesuffix("-copy"), d["id"])) for d in docs
              if d["id"].endswith("-copy")}
    return {"first": first, "second": second, "root": tmp / "root", "pairs": pairs,
            "n": len(docs) + len(extra)}


def _stage(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in summary["stages"] if s["stage"] == name)


def _manifest(root: Path, summary: dict[str, Any], name: str) -> dict[str, Any]:
    m = _stage(summary, name)
    return json.loads((root / "stages" / name / m["version"] / "manifest.json").read_text())


def _table(root: Path, rels: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / r) for r in rels])


def test_semdedup_finds_the_planted_paraphrases(runs: dict[str, Any]) -> None:
    root, first = runs["root"], runs["first"]
    assert first["status"] == "completed", first
    order = [s["stage"] for s in first["stages"]]
    assert order.index("embed") < order.index("clusters") < order.index("score")
    for s in first["stages"]:
        assert s["docs_in"] == s["docs_kept"] + s["docs_rejected"], s
    f = _manifest(root, first, "filter")
    rej = _table(root, f["outputs"]["rejected"])
    dropped = set(rej.filter(pa.compute.equal(rej.column("reject_reason"),
                                              "semdedup.near_duplicate"))
                  .column("id").to_pylist())
    kept = _table(root, f["outputs"]["kept"])
    near = dict(zip(rej.column("id").to_pylist(), rej.column("semdedup_nearest").to_pylist(),
                    strict=True))
    in_pairs = {d for d in dropped if frozenset((d, near[d])) in runs["pairs"]}
    found = {p for p in runs["pairs"] if p & dropped}
    precision = len(in_pairs) / max(len(dropped), 1)
    recall = len(found) / len(runs["pairs"])
    assert recall >= 0.9 and precision >= 0.9, (precision, recall, dropped - in_pairs)
    # one of each found pair survives
    kept_ids = set(kept.column("id").to_pylist())
    assert all(p & kept_ids for p in found)


def test_clusters_json_shows_sizes_titles_and_the_sweep(runs: dict[str, Any]) -> None:
    root = runs["root"]
    m = _manifest(root, runs["first"], "clusters")
    doc = json.loads((root / m["outputs"]["clusters"]).read_text())
    assert doc["k"] == 8 and sum(c["size"] for c in doc["clusters"]) == runs["n"]
    assert all(c["titles"] and len(c["titles"][0]) <= 60 for c in doc["clusters"])
    sweep = {float(k): v for k, v in doc["semdedup_sweep"].items()}
    assert [sweep[e] for e in sorted(sweep)] == sorted(sweep.values())  # more eps, more drops
    assert sweep[EPSILON] >= len(runs["pairs"]) * 0.9


def test_a_new_decision_reuses_embeddings_and_clusters(runs: dict[str, Any]) -> None:
    first, second, root = runs["first"], runs["second"], runs["root"]
    assert second["status"] == "completed", second
    for name in ("embed", "clusters"):
        assert _stage(second, name)["version"] == _stage(first, name)["version"]
        assert _stage(second, name)["cached"]
    f = _manifest(root, second, "filter")
    kept = _table(root, f["outputs"]["kept"])
    # density keeps ceil(50 %) of the clustered documents, diversity 80 % of the same pool
    assert f["docs_kept"] == len(kept) and f["docs_in"] == runs["n"]
    stats = f.get("corpus", {})
    dens = next(v for k, v in stats.items() if "density" in k)
    assert dens["clusters_before"] >= dens["clusters_after"] >= 1
    assert sum(c["quota"] for c in dens["clusters"]) == dens["kept"]
