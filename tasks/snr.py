"""Which metric decides a multiple-choice task: accuracy or the gold continuation's bits per
byte, whichever has the higher measured signal-to-noise ratio ("Signal and Noise", Heineman et
al. 2025; SNR itself is tasks/stats.py ``snr``, computed per task and metric by
tasks/compare.py across the compared models).

Accuracy moves in steps of 1 / items and sits at chance for small models; the gold
continuation's bits per byte is continuous and moves with every bit of probability the model
puts on the right answer, so at proxy scale it usually has the higher SNR — but it is measured,
not assumed. When it cannot be measured (one model, or one value per model: one seed and no
scored checkpoints) the default, ``DEFAULT_METRIC`` (bits per byte), decides and the choice says
so. The held-out ``heldout`` and ``heldout/<source>`` tasks have only bits per byte.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

DEFAULT_METRIC = "bpb"
AGGREGATE_TASK = "aggregate"
NOT_MEASURED = ("SNR not measured (it needs two models or more, and two values or more per "
                "model: seeds or scored checkpoints)")


def pair(task: str) -> tuple[str, str] | None:
    """(accuracy metric, bits-per-byte metric) a task chooses between; None for tasks with one
    metric (held-out bits per byte)."""
    if task == "heldout" or task.startswith("heldout/"):
        return None
    return ("acc_centred" if task == AGGREGATE_TASK else "acc", "bpb")


def _snr_of(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(task, metric) -> SNR, from SNR rows or decision rows (both carry ``snr``)."""
    out: dict[tuple[str, str], float] = {}
    for r in rows:
        v = r.get("snr")
        out[(r["task"], r["metric"])] = float(v) if v is not None else float("nan")
    return out


def _finite(x: float) -> bool:
    return not math.isnan(x) and not math.isinf(x)


def choose(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task that has both an accuracy and a bits-per-byte row: the deciding metric.

    rows: SNR rows or decision rows (task, metric, snr). Returns one dict per task: task,
    accuracy (its name), acc_snr, bpb_snr, metric (the one that decides), measured (whether
    both SNRs were measured) and why (a sentence for people)."""
    snr_of = _snr_of(rows)
    out = []
    for task in sorted({t for t, _ in snr_of}):
        p = pair(task)
        if p is None or (task, p[0]) not in snr_of or (task, p[1]) not in snr_of:
            continue
        acc, bpb = snr_of[(task, p[0])], snr_of[(task, p[1])]
        measured = _finite(acc) and _finite(bpb)
        if not measured:
            metric = DEFAULT_METRIC
            why = f"{NOT_MEASURED}: {DEFAULT_METRIC}, the default, decides"
        else:
            metric = p[0] if acc > bpb else p[1]  # a tie goes to bits per byte
            why = (f"{metric} decides: SNR {p[1]} {bpb:.2f} vs {p[0]} {acc:.2f}")
        out.append({"task": task, "accuracy": p[0], "acc_snr": acc, "bpb_snr": bpb,
                    "metric": metric, "measured": measured, "why": why})
    return out


def mark(rows: list[dict[str, Any]], choices: list[dict[str, Any]]) -> None:
    """Sets ``decides`` on decision rows (the deciding metric of its task: the chosen one; bits
    per byte for held-out tasks; accuracy where a task has no bits per byte, as in scores
    written before it existed) and adds the choice to the deciding row's note."""
    by_task = {c["task"]: c for c in choices}
    for r in rows:
        c = by_task.get(r["task"])
        if c is None:
            p = pair(r["task"])
            r["decides"] = p is None or r["metric"] == p[0]
            continue
        r["decides"] = r["metric"] == c["metric"]
        if r["decides"]:
            r["note"] = "; ".join(x for x in (r.get("note"), c["why"]) if x)


def deciding_metrics(rows: list[dict[str, Any]], wanted: list[str]
                     ) -> tuple[list[str], list[str]]:
    """The refresh gate's TASK/METRIC list with each multiple-choice task's accuracy or bits
    per byte replaced by the one with the higher measured SNR (the default when unmeasured).
    A named metric is kept when the chosen one has no comparison row (scores written before
    bits per byte existed). Returns (metrics, one sentence per replaced or confirmed choice)."""
    have = {f"{r['task']}/{r['metric']}" for r in rows}
    by_task = {c["task"]: c for c in choose(rows)}
    out, said = [], []
    for w in wanted:
        task, _, metric = w.rpartition("/")
        c = by_task.get(task)
        p = pair(task)
        if c is None or p is None or metric not in p:
            out.append(w)
            continue
        chosen = f"{task}/{c['metric']}"
        if chosen not in have:
            out.append(w)
            continue
        out.append(chosen)
        said.append(f"{task}: {c['why']}" + (f" (the recipe names {w})" if chosen != w else ""))
    return list(dict.fromkeys(out)), said
