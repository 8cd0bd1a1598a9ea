"""Compare two runs: per task and metric, the difference with a paired bootstrap interval over
the items both runs scored, the minimum detectable effect, and a verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tasks.stats import paired_bootstrap, snr

HIGHER_IS_BETTER = {"bpb": False, "acc": True, "acc_norm": True}


def items_of(stage_path: Path) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """(task, metric) -> item_id -> (num, den), from an evaluate stage's items.parquet."""
    path = Path(stage_path) / "items.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no per-item scores at {path} (evaluated before they existed?)")
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for r in pq.read_table(path).to_pylist():
        out.setdefault((r["task"], r["metric"]), {})[r["item_id"]] = (r["num"], r["den"])
    return out


def compare(a_paths: list[Path], b_paths: list[Path], n_boot: int = 2000, seed: int = 0
            ) -> list[dict[str, Any]]:
    """a_paths/b_paths: the evaluate stage folders of each side's seeds (one per seed).
    Items are paired by id: only items every model scored are used."""
    a_sets = [items_of(p) for p in a_paths]
    b_sets = [items_of(p) for p in b_paths]
    out = []
    for key in sorted(set.intersection(*(set(s) for s in a_sets + b_sets))):
        ids = sorted(set.intersection(*(set(s[key]) for s in a_sets + b_sets)))
        if not ids:
            continue

        def arr(sets: list[dict], part: int, k: tuple[str, str] = key,
                ids: list[str] = ids) -> np.ndarray:
            return np.array([[s[k][i][part] for i in ids] for s in sets])

        task, metric = key
        na, da, nb, db = arr(a_sets, 0), arr(a_sets, 1), arr(b_sets, 0), arr(b_sets, 1)
        c = paired_bootstrap(na, da, nb, db, HIGHER_IS_BETTER.get(metric, True), metric,
                             n_boot, seed=seed)
        # signal: the two sides' spread; noise: seed-to-seed spread (needs >= 2 seeds a side)
        per_seed = {"a": list(na.sum(1) / da.sum(1)), "b": list(nb.sum(1) / db.sum(1))}
        out.append({"task": task, **c.as_dict(), **snr(per_seed)})
    return out
