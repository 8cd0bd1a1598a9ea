"""``compat: datatrove`` vs datatrove 0.10.1: keep/drop agreement and speed, and what the
default mode's differences come from.

Same documents, same run, as ``test_bench_filters.py`` (whose corpus loader and datatrove
runner this reuses: datatrove in its own virtualenv ``.bench-venv``, given no language, i.e.
English, for every document): the four filters at datatrove's defaults, alone and chained in
FineWeb's order. datamill decides every document twice through the filter stage's own
functions (``score_table`` then ``first_failure``): once with ``compat: datatrove`` on every
filter (the chain: ``gopher_repetition``, ``gopher_quality``, ``c4_lines``, ``c4_quality``,
``fineweb_quality``), once at its defaults (language-aware, its own documented choices).

Printed: per filter and for the chain, compat mode's docs/s, datatrove's, the ratio (target
>= 5x), keep/drop agreement of each mode over all documents (target >= 99.5 % for compat
mode), and the rules that account for the default mode's disagreements: for a document the
default mode drops and datatrove keeps, the default mode's first failing rule; for one
datatrove drops and the default mode keeps, compat mode's first failing rule (the same rule
names, scored datatrove's way), else datatrove's own reason.

Timing is as in ``test_bench_filters.py`` (after a 20-document warm-up, without building the
inputs); datamill's caches of token splits are emptied before each warm-up, so no timed run
reuses work of an earlier one (datatrove's tokenizer caches nothing inside its memory zone).
Compat-mode disagreements go to ``.datamill/bench/compat_disagreements.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from test_bench_filters import CHAIN, DM_CHAIN, FILTERS, ROOT, datatrove_python, load_corpus
from test_bench_filters import run_datatrove as run_datatrove_filters

SPEED_TARGET = 5.0
AGREE_TARGET = 99.5
AGREE_FLOOR = 99.0  # a sanity floor for compat mode (the target is printed, not asserted)


def configs(names: list[str], compat: bool) -> dict[str, Any]:
    from tasks.filters.base import get_filter

    extra = {"compat": "datatrove"} if compat else {}
    return {n: get_filter(n).Config(**extra) for n in names}


def decide(table: pa.Table, names: list[str], compat: bool) -> tuple[np.ndarray, float]:
    """(first failing rule per doc, '' = kept; seconds to score + decide)."""
    from tasks.filter import first_failure, score_table
    from tasks.filters import compat as compat_mod
    from tasks.filters import compat_words

    cfg = configs(names, compat)
    compat_words._chunk_cache.clear()
    compat_mod._token_info.clear()
    first_failure(score_table(table.slice(0, 20), cfg, None), cfg)  # warm-up
    t0 = time.perf_counter()
    reason, _ = first_failure(score_table(table, cfg, None), cfg)
    return reason, time.perf_counter() - t0


def accounting(default: np.ndarray, compat: np.ndarray, dt_keep: np.ndarray,
               dt_reason: list[str], prefix: str) -> Counter[tuple[str, str]]:
    """(rule, side) -> docs, over the default mode's disagreements with datatrove."""
    out: Counter[tuple[str, str]] = Counter()
    for i in np.flatnonzero((default == "") != dt_keep):
        if default[i]:
            out[(default[i], "default drops, datatrove keeps")] += 1
        else:
            rule = compat[i] or f"{prefix}(datatrove) {dt_reason[i]}"
            out[(rule, "datatrove drops, default keeps")] += 1
    return out


def test_compat_mode_vs_datatrove(tmp_path: Path, bench_scale: int, bench_out: Path,
                                  table: Callable[..., str]) -> None:
    docs, label = load_corpus(bench_scale)
    n = len(docs)
    arrow = pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs],
                      "lang": pa.array([d.get("lang") for d in docs], pa.string())})
    dt = run_datatrove_filters(datatrove_python(), docs, tmp_path, counterfactual=False)
    assert dt["ids"] == [d["id"] for d in docs], "datatrove answered for other docs"
    dt_res = {**dt["filters"], CHAIN: dt["chain"]}

    rows, why_rows, out = [], [], []
    floors: dict[str, float] = {}
    for name in [*FILTERS, CHAIN]:
        names = DM_CHAIN if name == CHAIN else [name]
        compat, compat_s = decide(arrow, names, compat=True)
        default, _ = decide(arrow, names, compat=False)
        dt_keep = np.array(dt_res[name]["keep"], dtype=bool)
        dt_reason = dt_res[name]["reason"]
        assert len(compat) == len(default) == len(dt_keep) == n
        agree_c = (compat == "") == dt_keep
        agree_d = (default == "") == dt_keep
        ratio = (n / compat_s) / (n / dt_res[name]["seconds"])
        floors[name] = 100 * agree_c.mean()
        rows.append([
            name, f"{n / compat_s:,.0f}", f"{n / dt_res[name]['seconds']:,.0f}",
            f"{ratio:.1f}x", "PASS" if ratio >= SPEED_TARGET else "MISS",
            f"{100 * agree_c.mean():.2f}", "PASS" if floors[name] >= AGREE_TARGET else "MISS",
            f"{int((~agree_c).sum())}", f"{100 * agree_d.mean():.2f}", f"{int((~agree_d).sum())}",
        ])
        prefix = "" if name == CHAIN else f"{name}."
        for (rule, side), k in accounting(default, compat, dt_keep, dt_reason,
                                          prefix).most_common():
            why_rows.append([name, rule, side, str(k)])
        for i in np.flatnonzero(~agree_c):
            out.append({"filter": name, "id": docs[i]["id"], "datamill_compat": compat[i] or "kept",
                        "datatrove": dt_reason[i] or "kept", "text_head": docs[i]["text"][:300]})

    (bench_out / "compat_disagreements.json").write_text(
        json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    for name, agree in floors.items():
        assert agree >= AGREE_FLOOR, f"{name}: compat mode agrees on {agree:.2f} % only"

    print(f"\n\n=== compat: datatrove vs datatrove {dt['version']} (same docs, same run) ===")
    print(f"corpus: {label} = {n:,} docs; cpus {os.cpu_count()}, "
          f"load avg {os.getloadavg()[0]:.2f}")
    print(table(["filter", "compat docs/s", "datatrove docs/s", "ratio",
                 f">={SPEED_TARGET:g}x", "compat agree %", f">={AGREE_TARGET:g}%", "differ",
                 "default agree %", "differ"], rows))
    print("agreement: keep/drop, all documents. default = datamill's documented "
          "language-aware choices (docs/filters.md).")
    print("\nrules accounting for the default mode's disagreements with datatrove:")
    print(table(["filter", "rule", "side", "docs"], why_rows))
    where = (bench_out / "compat_disagreements.json").relative_to(ROOT)
    print(f"compat-mode disagreements: {where}")
