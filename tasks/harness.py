"""lm-evaluation-harness on a datamill checkpoint (the optional extra ``lmeval``).

A datamill checkpoint is a Hugging Face ``save_pretrained`` folder (safetensors, config and
tokenizer), so the harness's ``hf`` model loads it as it is. Tasks are the harness's own (which
fetch their data from the hub: not possible offline) or task YAML files in ``include`` folders,
e.g. a multiple-choice task over a local JSONL file (docs/evaluation.md has one).

Scoring: ``add_bos_token`` prepends the tokenizer's BOS, which for datamill's tokenizer is the
end-of-text token the proxy saw at every document start; datamill's own multiple-choice scorer
(tasks/evaluate.py) uses the same context, so both give the same per-item answers.

Per-sample scores come back as the same (task, metric, item_id, num, den) rows as datamill's
own tasks, so ``datamill compare`` can pair them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

HARNESS_PREFIX = "harness/"  # catalog task names: harness/<task>


def available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _metrics(task_results: dict[str, Any]) -> dict[str, float]:
    """{"acc,none": 0.5, "acc_stderr,none": ...} -> {"acc": 0.5}: numeric, unfiltered metrics
    (a filter other than "none" is kept in the name)."""
    out = {}
    for k, v in task_results.items():
        if "," not in k or "_stderr" in k or isinstance(v, bool):
            continue
        name, filt = k.split(",", 1)
        if isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
            out[name if filt == "none" else f"{name}[{filt}]"] = float(v)
    return out


def run_harness(checkpoint: Path, tasks: list[str], include: list[Path] | None = None,
                batch_size: int = 8, device: str = "cpu", limit: int | None = None,
                num_fewshot: int | None = None) -> dict[str, Any]:
    """Run the harness's ``hf`` model on ``checkpoint``. Returns {"results": {task: {metric:
    value}}, "items": [{task, metric, item_id, source, num, den}], "n_samples": {task: n},
    "lm_eval": version}."""
    try:
        import lm_eval
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise RuntimeError("lm-evaluation-harness is not installed: "
                           "pip install 'datamill[lmeval]'") from e
    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a save_pretrained folder (no config.json)")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    manager = TaskManager(include_path=[str(p) for p in include] if include else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown harness task(s) {unknown}; add their YAML folder with "
                         "--include")
    out = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(checkpoint), "dtype": "float32", "add_bos_token": True},
        tasks=tasks, task_manager=manager, batch_size=batch_size, device=device, limit=limit,
        num_fewshot=num_fewshot, bootstrap_iters=0, log_samples=True)
    results = {t: _metrics(r) for t, r in out["results"].items()}
    items = []
    for task, samples in out.get("samples", {}).items():
        for s in samples:
            for metric in results.get(task, {}):
                v = s.get(metric)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    items.append({"task": HARNESS_PREFIX + task, "metric": metric,
                                  "item_id": str(s["doc_id"]), "source": None,
                                  "num": float(v), "den": 1.0})
    return {"results": results, "items": items, "lm_eval": lm_eval.__version__,
            "n_samples": {t: len(s) for t, s in out.get("samples", {}).items()}}
