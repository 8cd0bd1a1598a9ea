"""`datamill mixsearch` end to end: a tiny recipe of two sources, the fewest mixtures the law
needs (4), one seed, a few training steps; shared stages run once, the law is fitted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from flows.cli import main
from flows.cli.mixsearch import print_search
from flows.mixsearch import fit_and_predict
from tasks.catalog import Catalog

pytestmark = pytest.mark.slow

SOURCES = ["postgresql-docs", "wikipedia-summaries"]


def two_sources(lines: list[str], path: Path) -> Path:
    docs = [json.loads(x) for x in lines]
    wiki = [d for d in docs if d["source"] == SOURCES[1] and d["lang"] == "en"][::4]
    pg = [d for d in docs if d["source"] == SOURCES[0]]
    path.write_text("".join(json.dumps(d) + "\n" for d in wiki + pg))
    return path


def test_mixsearch_end_to_end(prefect_harness: None, sample_lines: list[str], tmp_path: Path,
                              write_recipe: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    recipe = write_recipe(tmp_path / "mix.yaml", two_sources(sample_lines, tmp_path / "in.jsonl"),
                          root)
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["tokenize"]["heldout_fraction"] = 0.2  # both sources held out
    raw["stages"]["train"]["max_tokens"] = 8 * 64 * 6  # 6 steps
    raw["stages"]["evaluate"].update(max_docs=None, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))

    rc = main(["mixsearch", str(recipe), "--points", "4", "--json"])
    text = capsys.readouterr().out
    assert rc == 0, text
    out = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))

    assert out["sources"] == SOURCES and out["points_needed"] == 4
    pts = out["points"]
    assert len(pts) == 4
    # each run drew the lattice's proportions (to a row of rounding per batch)
    for pt in pts:
        assert np.allclose(pt["proportions"], pt["target"], atol=0.05), pt
        assert set(pt["bpb"]) == set(SOURCES)
    # the runs differ only in training: one tokenize stage for all, five runs in the catalog
    cat = Catalog(root / "catalog.duckdb")
    toks = {v for r in [p["run_id"] for p in pts]
            for st, v in cat.stage_versions(r, ["tokenize"])}
    assert len(toks) == 1
    trains = {v for r in [p["run_id"] for p in pts]
              for st, v in cat.stage_versions(r, ["train"])}
    assert len(trains) == 4
    # more of a source in the mix: lower held-out loss on it (the extremes of the lattice)
    only_pg, only_wiki = pts[0], pts[-1]
    assert only_pg["target"] == [1.0, 0.0] and only_wiki["target"] == [0.0, 1.0]
    assert only_pg["bpb"][SOURCES[0]] < only_wiki["bpb"][SOURCES[0]]
    assert only_wiki["bpb"][SOURCES[1]] < only_pg["bpb"][SOURCES[1]]

    fit = out["fit"]
    assert "error" not in fit, fit
    best = np.array(list(fit["best"].values()))
    assert best.sum() == pytest.approx(1.0) and (best >= 0).all()
    assert all(r2 > 0.5 for r2 in fit["quality"]["r2"].values())
    assert fit["quality"]["loo_mae"] is None  # 4 points: none to spare for leave-one-out
    saved = json.loads((root / "mixsearch" / out["search"] / "result.json").read_text())
    assert saved["fit"]["best"] == fit["best"]

    # the text view names the fit, and three points are too few for a law: said so
    print_search(out)
    shown = capsys.readouterr().out
    assert "predicted best mixture" in shown and "R2" in shown
    short = fit_and_predict(pts[:3], SOURCES, None, out["rows"])
    assert short == {"error": "the mixing law of 2 sources has 3 parameters per source and "
                     "needs at least 4 distinct mixtures; got 3"}
    print_search({**out, "fit": short})
    assert "no mixing law fitted: the mixing law of 2 sources" in capsys.readouterr().out
