"""The embedding and LLM-rating selectors in one recipe, through the real flow (Prefect,
Dask, Ray, DuckDB), against a real local OpenAI-compatible server whose replies are known:
``dataman`` rates every document, ``embed`` stores every document's vector, ``fineweb_edu``
annotates a sample, fits its head and scores every document, and the filter stage decides
(``edu`` keeps round(edu_score) >= 3, ``dataman_topk`` keeps the top half of each domain)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from llmkit import FakeLLM

from tasks.select.embed import as_matrix

pytestmark = pytest.mark.slow
EDUCATIONAL = {"postgresql-docs", "python-docs", "django-docs", "apache-httpd-docs",
               "debian-handbook"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "selection.md"


def _snippet() -> dict[str, Any]:
    """The recipe snippet of docs/selection.md's FineWeb-Edu section."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## FineWeb-Edu"):]
    block = section[section.index("```yaml") + 7:]
    return yaml.safe_load(block[:block.index("```")])


@pytest.fixture(scope="module")
def edu_run(prefect_harness: None, sample_lines: list[str],
            tmp_path_factory: pytest.TempPathFactory, write_recipe: Any) -> dict[str, Any]:
    from flows.pipeline import run_recipe

    tmp = tmp_path_factory.mktemp("llm-select")
    docs = [json.loads(x) for x in sample_lines[::20]]  # ~110 documents, every source
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    by_text = {d["text"][:200]: d["source"] in EDUCATIONAL for d in docs}
    llm = FakeLLM()

    def reply(n: int) -> str:  # documentation is educational (4), the rest is not (1)
        content = llm.calls[n - 1]
        good = any(k in content for k, v in by_text.items() if v)
        if content.startswith("Below is an extract"):
            return f"Reasons.\nEducational score: {4 if good else 1}"
        return f"[14] Overall Score: {5 if good else 2}/5\nDomain Type: {'H' if good else 'J'}"

    llm.reply = reply
    recipe = yaml.safe_load(write_recipe(tmp / "base.yaml", src, tmp / "root").read_text())
    snippet = _snippet()["stages"]
    snippet["extra"][1]["with"]["llm"].update(base_url=llm.url, model="fake")
    snippet["extra"][1]["with"].update(sample=60, heldout_fraction=0.25)
    snippet["extra"].append({"use": "tasks.select.dataman_stage:DataMan", "after": "rewrite",
                             "with": {"llm": {"base_url": llm.url, "model": "fake"}}})
    recipe["stages"]["extra"] = snippet["extra"]
    recipe["stages"]["filter"] = {**snippet["filter"], "exact_dedup": {},
                                  "corpus": {"tasks.select.dataman_topk": {"percent": 50}}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    try:
        summary = run_recipe(str(path), until="filter")
    finally:
        llm.close()
    return {"summary": summary, "root": tmp / "root", "calls": list(llm.calls), "docs": docs}


def _stage(s: dict[str, Any], name: str) -> dict[str, Any]:
    return next(x for x in s["stages"] if x["stage"] == name)


def _manifest(s: dict[str, Any], name: str) -> dict[str, Any]:
    return json.loads((Path(_stage(s, name)["output_path"]) / "manifest.json").read_text())


def test_the_stages_run_in_order_and_account(edu_run: dict[str, Any]) -> None:
    s = edu_run["summary"]
    assert s["status"] == "completed"
    order = [x["stage"] for x in s["stages"]]
    assert order.index("rewrite") < order.index("dataman") < order.index("embed") \
        < order.index("fineweb_edu") < order.index("score") < order.index("filter")
    for x in s["stages"]:
        assert x["docs_in"] == x["docs_kept"] + x["docs_rejected"], x["stage"]


def test_embeddings_follow_the_contract(edu_run: dict[str, Any]) -> None:
    m, root = _manifest(edu_run["summary"], "embed"), edu_run["root"]
    dm = _manifest(edu_run["summary"], "dataman")
    assert m["embed_model"] == "all-MiniLM-L6-v2" and m["dim"] == 384
    assert len(m["outputs"]["embeddings"]) == len(dm["outputs"]["kept"])
    for e, d in zip(m["outputs"]["embeddings"], dm["outputs"]["kept"], strict=True):
        t = pq.read_table(root / e)
        assert t.schema.field("embedding").type == pa.list_(pa.float32(), 384)
        assert t.column("id").to_pylist() == pq.read_table(root / d).column("id").to_pylist()
        assert np.allclose(np.linalg.norm(as_matrix(t.column("embedding")), axis=1), 1,
                           atol=1e-4)


def test_fineweb_edu_annotates_a_sample_and_its_head_separates(edu_run: dict[str, Any]) -> None:
    m = _manifest(edu_run["summary"], "fineweb_edu")
    edu_calls = [c for c in edu_run["calls"] if c.startswith("Below is an extract")]
    assert m["llm"]["sampled"] == m["llm"]["annotated"] == 60 == len(edu_calls)
    assert m["llm"]["new_generations"] == 60 and m["fit"]["heldout"]["n"] > 5
    assert m["fit"]["heldout"]["f1_at_3"] > 0.8
    root = edu_run["root"]
    t = pa.concat_tables([pq.read_table(root / p, columns=["source", "edu_score"])
                          for p in m["outputs"]["kept"]])
    good = np.isin(np.asarray(t.column("source").to_pylist()), list(EDUCATIONAL))
    s = t.column("edu_score").to_numpy()
    assert len(s) == m["docs_in"] and s[good].mean() > s[~good].mean() + 1.0


def test_the_filter_decides_on_the_stored_scores(edu_run: dict[str, Any]) -> None:
    f, root = _manifest(edu_run["summary"], "filter"), edu_run["root"]
    kept = pa.concat_tables([pq.read_table(root / p) for p in f["outputs"]["kept"]])
    rej = pa.concat_tables([pq.read_table(root / p) for p in f["outputs"]["rejected"]])
    assert np.all(np.round(kept.column("edu_score").to_numpy()) >= 3)
    reasons = rej.column("reject_reason").to_pylist()
    low = [r for r, s in zip(reasons, rej.column("edu_score").to_pylist(), strict=True)
           if round(s) < 3]
    # the only document rule: every low score is its (corpus rules rank the passing ones)
    assert low and set(low) == {"edu.below_min_score"}
    assert "edu.below_min_score" in f["rejections"]
    assert {"dataman_score", "dataman_domain"} <= set(kept.column_names)
    dm = _manifest(edu_run["summary"], "dataman")
    assert dm["llm"]["new_generations"] == dm["docs_in"] and dm["unparsed"] == 0
