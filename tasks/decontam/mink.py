"""Min-K% Prob (Shi et al. 2023, "Detecting Pretraining Data from Large Language Models").

An item's score is the mean of the lowest k % of its tokens' log-probabilities under a trained
proxy (k = 20 by default, the paper's best setting for most models). Text the model was trained
on has fewer very unlikely tokens, so its score is higher (less negative).

Tokens are scored as ``tasks/evaluate.py`` scores held-out text: the checkpoint's own
tokenizer, ``[eos] + tokens(text)``, windows of ``seq_len`` predictions; every token of the
text is predicted once.

Calibration: per task, a reference of known-unseen text (by default the run's held-out
documents that the evaluation does not use; or files the user names) is cut into passages of
the task's median item length in words and scored the same way. The threshold is the
``1 - fpr`` quantile of the reference scores (``fpr`` = 0.05): an unseen item is flagged with
probability about ``fpr``; a task with many more flagged items than that, or an AUC of its
items against the reference well above 0.5, looks seen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tasks.decontam.items import Item

SHOW_IDS = 20
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def token_logprobs(checkpoint_dir: Path, texts: list[str], batch_size: int = 16,
                   device: str = "auto") -> list[np.ndarray]:
    """Per text, the log-probability of each of its tokens under the checkpoint."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from tasks.evaluate import token_windows
    from tasks.train import resolve_device

    checkpoint_dir = Path(checkpoint_dir)
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint_dir, dtype=torch.float32, attn_implementation="sdpa").to(dev).eval()
    seq_len = int(model.config.max_position_embeddings)
    eos_id = model.config.eos_token_id
    tok = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    windows: list[tuple[int, list[int]]] = []
    for i, enc in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        windows.extend((i, w) for w in token_windows([eos_id, *enc.ids], seq_len))
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size]
            width = max(len(w) for _, w in batch) - 1
            ids = torch.full((len(batch), width), eos_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (_, w) in enumerate(batch):
                ids[r, :len(w) - 1] = torch.tensor(w[:-1])
                mask[r, :len(w) - 1] = 1
            logp = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                         use_cache=False).logits.float().log_softmax(-1)
            for r, (i, w) in enumerate(batch):
                tgt = torch.tensor(w[1:], device=dev)
                parts[i].append(logp[r, :len(w) - 1].gather(-1, tgt[:, None])[:, 0]
                                .double().cpu().numpy())
    return [np.concatenate(p) if p else np.zeros(0) for p in parts]


def min_k(logprobs: np.ndarray, k: float = 20.0) -> float:
    """Mean of the lowest ``k`` % of the token log-probabilities (at least one token)."""
    if len(logprobs) == 0:
        return float("nan")
    m = max(1, math.ceil(len(logprobs) * k / 100))
    return float(np.sort(logprobs)[:m].mean())


def scores(checkpoint_dir: Path, texts: list[str], k: float = 20.0, batch_size: int = 16,
           device: str = "auto") -> np.ndarray:
    return np.array([min_k(lp, k) for lp in
                     token_logprobs(checkpoint_dir, texts, batch_size, device)], np.float64)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a score of ``pos`` > one of ``neg``), ties counting half (Mann-Whitney U / n1 n2)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    both = np.concatenate([pos, neg])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # average ranks of ties
        tie = both == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def threshold(reference: np.ndarray, fpr: float = 0.05) -> float:
    """The ``1 - fpr`` quantile of the reference scores: at most ``fpr`` of them lie above."""
    return float(np.quantile(np.asarray(reference, float), 1 - fpr, method="higher"))


def passages(texts: list[str], n_words: int, max_passages: int) -> list[str]:
    """Consecutive passages of ``n_words`` whitespace-separated words, in order."""
    out: list[str] = []
    for t in texts:
        w = t.split()
        for s in range(0, len(w) - n_words + 1, n_words):
            out.append(" ".join(w[s:s + n_words]))
            if len(out) >= max_passages:
                return out
    return out


def _quantiles(x: np.ndarray) -> dict[str, float | None]:
    x = x[np.isfinite(x)]
    return {f"p{round(q * 100):02d}": (float(np.quantile(x, q)) if len(x) else None)
            for q in QUANTILES}


def mink_report(checkpoint_dir: Path, items: list[Item], reference: list[str], k: float = 20.0,
                fpr: float = 0.05, max_items: int = 200, max_reference: int = 200,
                batch_size: int = 16, device: str = "auto") -> dict[str, Any]:
    """Per task: the items' Min-K% scores against length-matched reference passages, the
    calibrated threshold, the items flagged above it and the AUC of items vs reference."""
    by_task: dict[str, list[Item]] = {}
    for it in items:
        if len(by_task.setdefault(it.task, [])) < max_items:
            by_task[it.task].append(it)
    ref_cache: dict[int, np.ndarray] = {}
    tasks: dict[str, Any] = {}
    for task, its in sorted(by_task.items()):
        s = scores(checkpoint_dir, [i.text for i in its], k, batch_size, device)
        width = max(1, int(np.median([len(i.text.split()) for i in its])))
        if width not in ref_cache:
            ref_cache[width] = scores(checkpoint_dir, passages(reference, width, max_reference),
                                      k, batch_size, device)
        ref = ref_cache[width]
        ref = ref[np.isfinite(ref)]
        thr = threshold(ref, fpr) if len(ref) else float("nan")
        flagged = [i.id for i, v in zip(its, s, strict=True) if len(ref) and v > thr]
        tasks[task] = {"items": len(its), "words_median": width,
                       "reference_passages": int(len(ref)), "threshold": thr,
                       "flagged": len(flagged),
                       "flagged_share": len(flagged) / len(its) if its else float("nan"),
                       "flagged_ids": flagged[:SHOW_IDS], "auc_vs_reference": auc(s, ref),
                       "items_quantiles": _quantiles(s), "reference_quantiles": _quantiles(ref)}
    return {"k": k, "fpr": fpr, "checkpoint": str(checkpoint_dir), "tasks": tasks}
