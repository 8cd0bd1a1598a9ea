"""Bits per byte of a trained checkpoint on a table of documents.

bpb = total NLL (nats) / ln 2 / total UTF-8 bytes. Dividing by bytes, not tokens, makes models
with different tokenizers comparable.

Each document is scored as [eos] + tokens(text): the leading EOS is the "start of document"
context the model saw during training (documents are EOS-separated there), and every text token
is predicted exactly once. Long documents are cut into windows of seq_len predictions; window k
predicts tokens (k*seq_len, (k+1)*seq_len] from the tokens of that window only. The context
restarts at each window, so tokens early in a window see less context than a sliding window
would give them: a slight overestimate of the true bpb, the same for every model compared.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from tasks.train import resolve_device


def token_windows(ids: list[int], seq_len: int) -> list[list[int]]:
    """Split [eos] + text ids into chunks of <= seq_len + 1 tokens, overlapping by one token:
    chunk[:-1] is the input, chunk[1:] the targets."""
    return [ids[start : start + seq_len + 1] for start in range(0, len(ids) - 1, seq_len)]


def _summary(nll: float, n_bytes: int, tokens: int, docs: int) -> dict[str, Any]:
    bpb = nll / math.log(2) / n_bytes if n_bytes else float("nan")
    return {"bpb": bpb, "nll_nats": nll, "bytes": n_bytes, "tokens": tokens, "docs": docs}


@torch.inference_mode()
def bits_per_byte(
    checkpoint_dir: Path,
    docs: pa.Table,
    seq_len: int,
    batch_size: int = 8,
    device: str = "auto",
    per_doc: bool = False,
) -> dict[str, Any]:
    """Score `docs` (columns id, text, source) with the checkpoint written by tasks.train.

    Returns {"overall": {"bpb", "nll_nats", "bytes", "tokens", "docs"}, "by_source": {source: ...}}.
    "tokens" counts predicted tokens (the text's tokens, not the leading EOS). bpb is NaN when
    there are no bytes to score.
    """
    checkpoint_dir = Path(checkpoint_dir)
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint_dir, dtype=torch.float32, attn_implementation="sdpa"
    ).to(dev)
    model.eval()
    eos_id = model.config.eos_token_id
    pad_id = eos_id  # any valid id: padded positions are masked out of attention and loss

    # the raw tokenizer, so no template can add special tokens behind our back
    tokenizer = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    texts: list[str] = docs.column("text").to_pylist()
    sources: list[str] = docs.column("source").to_pylist()
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)

    # every window of every document, tagged with its document's position in the table
    windows: list[tuple[int, list[int]]] = []
    for doc_idx, enc in enumerate(encodings):
        windows.extend((doc_idx, w) for w in token_windows([eos_id, *enc.ids], seq_len))
    # similar lengths in a batch => little padding (the order does not change any sums)
    windows.sort(key=lambda w: len(w[1]), reverse=True)

    doc_nll = [0.0] * len(texts)  # python floats: summed in float64
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        width = max(len(w) for _, w in batch) - 1
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        targets = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, w) in enumerate(batch):
            n = len(w) - 1
            input_ids[row, :n] = torch.tensor(w[:-1])
            targets[row, :n] = torch.tensor(w[1:])
            mask[row, :n] = 1
        # right padding: real tokens keep positions 0..n-1 and never attend to pads (causal)
        logits = model(
            input_ids=input_ids.to(dev), attention_mask=mask.to(dev), use_cache=False
        ).logits
        nll = F.cross_entropy(
            logits.float().flatten(0, 1), targets.to(dev).flatten(), reduction="none"
        ).view(len(batch), width)  # zero where target == -100
        for row, total in enumerate(nll.double().sum(dim=1).tolist()):
            doc_nll[batch[row][0]] += total

    # aggregate per source and overall
    per_source: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
    for text, source, enc, nll_value in zip(texts, sources, encodings, doc_nll, strict=True):
        acc = per_source[source]
        acc[0] += nll_value
        acc[1] += len(text.encode("utf-8"))
        acc[2] += len(enc.ids)
        acc[3] += 1
    by_source = {
        s: _summary(nll, int(b), int(t), int(d)) for s, (nll, b, t, d) in sorted(per_source.items())
    }
    overall = _summary(
        sum(v["nll_nats"] for v in by_source.values()),
        sum(v["bytes"] for v in by_source.values()),
        sum(v["tokens"] for v in by_source.values()),
        sum(v["docs"] for v in by_source.values()),
    )
    out: dict[str, Any] = {"overall": overall, "by_source": by_source}
    if per_doc:  # per-item scores, for paired comparisons between models
        out["per_doc"] = {"id": docs.column("id").to_pylist(), "source": sources,
                          "nll_nats": doc_nll,
                          "bytes": [len(t.encode("utf-8")) for t in texts]}
    return out


def _choice_tokens(tokenizer: Any, context: str, choice: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids the way lm-evaluation-harness splits them: encode the
    whole string and take what follows the context's tokens (BPE merges across the seam)."""
    ctx = tokenizer.encode(context, add_special_tokens=False).ids
    whole = tokenizer.encode(context + choice, add_special_tokens=False).ids
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tokenizer.encode(choice, add_special_tokens=False).ids


@torch.inference_mode()
def multiple_choice(
    checkpoint_dir: Path, items: list[dict[str, Any]], seq_len: int, batch_size: int = 16,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Score {id, context, choices, gold} items by log-likelihood, as lm-evaluation-harness does:
    ``correct`` picks the choice with the highest summed log-probability, ``correct_norm`` the
    highest log-probability per UTF-8 byte of the choice (acc_norm). ``gold_bpb`` is the bits
    per byte of the correct choice given the context (its NLL / ln 2 / its UTF-8 bytes): a
    continuous score, far less noisy than accuracy for small models (Signal and Noise)."""
    checkpoint_dir = Path(checkpoint_dir)
    dev = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        checkpoint_dir, dtype=torch.float32, attn_implementation="sdpa").to(dev).eval()
    eos_id = model.config.eos_token_id
    tokenizer = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    # one row per (item, choice): [eos] + context + continuation, cut from the left
    rows: list[tuple[int, int, list[int], int]] = []  # item, choice, ids, continuation length
    for i, item in enumerate(items):
        for j, choice in enumerate(item["choices"]):
            ctx, cont = _choice_tokens(tokenizer, item["context"], choice)
            ids = ([eos_id, *ctx, *cont])[-(seq_len + 1):]
            rows.append((i, j, ids, min(len(cont), len(ids) - 1)))
    logp = [[0.0] * len(it["choices"]) for it in items]
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        width = max(len(r[2]) for r in batch) - 1
        input_ids = torch.full((len(batch), width), eos_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for k, (_, _, ids, _) in enumerate(batch):
            input_ids[k, :len(ids) - 1] = torch.tensor(ids[:-1])
            mask[k, :len(ids) - 1] = 1
        logits = model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev),
                       use_cache=False).logits.float().log_softmax(-1)
        for k, (i, j, ids, n_cont) in enumerate(batch):
            n = len(ids) - 1
            targets = torch.tensor(ids[n - n_cont + 1:n + 1], device=dev)
            lp = logits[k, n - n_cont:n].gather(-1, targets[:, None]).double().sum().item()
            logp[i][j] = lp
    out = []
    for item, lps in zip(items, logp, strict=True):
        norm = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(lps, item["choices"],
                                                                        strict=True)]
        gold_bytes = max(1, len(item["choices"][item["gold"]].encode("utf-8")))
        out.append({"id": item["id"], "source": item.get("source"),
                    "correct": float(int(np.argmax(lps)) == item["gold"]),
                    "correct_norm": float(int(np.argmax(norm)) == item["gold"]),
                    "gold_bpb": -lps[item["gold"]] / math.log(2) / gold_bytes,
                    "n_choices": len(item["choices"])})
    return out


def evaluate_all(
    checkpoint_dir: Path, heldout: pa.Table, seq_len: int, batch_size: int,
    tasks: list[str], max_items: int, seed: int = 0,
) -> dict[str, Any]:
    """Bits per byte on the held-out docs plus the multiple-choice tasks built from them.

    Returns {"bpb": ..., "tasks": {task: {acc, acc_norm, acc_centred, bpb, items}}, "items":
    rows} where rows are per-item scores (task, metric, item_id, source, num, den) for paired
    comparisons: metric value = sum(num) / sum(den) over items. A task's ``bpb`` is the mean
    over items of the gold choice's bits per byte (each item weighs the same, as for acc)."""
    from tasks import evalsets

    bpb = bits_per_byte(checkpoint_dir, heldout, seq_len, batch_size, per_doc=True)
    per = bpb.pop("per_doc")
    rows = [{"task": "heldout", "metric": "bpb", "item_id": i, "source": s,
             "num": nll / math.log(2), "den": float(b)}
            for i, s, nll, b in zip(per["id"], per["source"], per["nll_nats"], per["bytes"],
                                    strict=True)]
    docs = heldout.to_pylist()
    results: dict[str, Any] = {}
    for task in tasks:
        items = evalsets.build(task, docs, max_items, seed)
        scored = multiple_choice(checkpoint_dir, items, seq_len, batch_size) if items else []
        n = len(scored)
        acc = sum(r["correct"] for r in scored) / n if n else float("nan")
        acc_norm = sum(r["correct_norm"] for r in scored) / n if n else float("nan")
        gold_bpb = sum(r["gold_bpb"] for r in scored) / n if n else float("nan")
        results[task] = {"acc": acc, "acc_norm": acc_norm, "bpb": gold_bpb, "items": n,
                         "acc_centred": evalsets.centred(acc) if n else float("nan")}
        for r in scored:
            rows.append({"task": task, "metric": "acc", "item_id": r["id"],
                         "source": r["source"], "num": r["correct"], "den": 1.0})
            rows.append({"task": task, "metric": "acc_norm", "item_id": r["id"],
                         "source": r["source"], "num": r["correct_norm"], "den": 1.0})
            rows.append({"task": task, "metric": "bpb", "item_id": r["id"],
                         "source": r["source"], "num": r["gold_bpb"], "den": 1.0})
    return {**bpb, "tasks": results, "items": rows}


def averaged_checkpoint(checkpoint_dirs: list[Path], out: Path) -> Path:
    """A save_pretrained folder whose weights are the mean of ``checkpoint_dirs``' (the last
    one's config and tokenizer): checkpoint averaging at evaluation time, no retraining."""
    from safetensors.torch import save_file

    from tasks.train import average_checkpoints

    out.mkdir(parents=True, exist_ok=True)
    last = Path(checkpoint_dirs[-1])
    for f in last.iterdir():
        if f.is_file() and f.name != "model.safetensors" and not f.name.startswith("train_"):
            shutil.copyfile(f, out / f.name)
    save_file(average_checkpoints(checkpoint_dirs), out / "model.safetensors",
              metadata={"format": "pt"})
    return out


def evaluate_run(
    train_dir: Path, heldout: pa.Table, seq_len: int, batch_size: int, tasks: list[str],
    max_items: int, seed: int = 0, checkpoints: int = 0, average_last: int = 0,
) -> dict[str, Any]:
    """evaluate_all on a train stage's model, plus what Signal and Noise needs.

    - ``average_last`` k > 1: score the mean of the last k resumable checkpoints' weights
      instead of the final checkpoint.
    - ``checkpoints`` n > 0: also score the last n resumable checkpoints (checkpoint noise).
    Per-item rows carry ``checkpoint``: "final" (the scored model) or "step-N"."""
    from tasks.train import complete_checkpoints

    train_dir = Path(train_dir)
    saved = complete_checkpoints(train_dir)
    want = max(checkpoints, average_last)
    if want > len(saved):
        raise ValueError(f"{train_dir}: evaluate wants the last {want} checkpoints, training "
                         f"kept {len(saved)} (set train.checkpoint_every and keep_checkpoints)")
    with tempfile.TemporaryDirectory(prefix="datamill-avg-") as tmp:
        scored = train_dir / "checkpoint"
        if average_last > 1:
            scored = averaged_checkpoint([d for _, d in saved[-average_last:]], Path(tmp))
        res = evaluate_all(scored, heldout, seq_len, batch_size, tasks, max_items, seed)
    for r in res["items"]:
        r["checkpoint"] = "final"
    res["averaged_steps"] = [s for s, _ in saved[-average_last:]] if average_last > 1 else []
    res["checkpoints"] = []
    for step, d in saved[len(saved) - checkpoints:] if checkpoints else []:
        r = evaluate_all(d, heldout, seq_len, batch_size, tasks, max_items, seed)
        res["items"] += [{**x, "checkpoint": f"step-{step}"} for x in r.pop("items")]
        res["checkpoints"].append({"step": step, "path": str(d), "overall": r["overall"],
                                   "tasks": r["tasks"]})
    return res


def read_raw_heldout(paths: list[str | Path], fraction: float,
                     max_docs: int | None = None) -> pa.Table:
    """The held-out split (the same id hash as tokenize) of the ingested documents, before
    rewriting and filtering: recipes that differ after ingest score the very same text."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.tokenize import heldout_mask

    cols = ["id", "text", "source", "lang"]
    parts = []
    for p in paths:
        t = pq.read_table(p, columns=[c for c in cols if c in pq.read_schema(p).names])
        parts.append(t.filter(pa.array(heldout_mask(t.column("id"), fraction))))
    if not parts:
        return pa.table({c: pa.array([], pa.large_string() if c == "text" else pa.string())
                         for c in cols})
    t = pa.concat_tables(parts, promote_options="default")
    t = t.take(pc.sort_indices(t, [("id", "ascending")]))
    return t.slice(0, max_docs) if max_docs else t


def evaluate_stage(train_dir: Path, data_dir: Path, raw_paths: list[str] | None,
                   heldout_fraction: float, max_docs: int | None, batch_size: int,
                   tasks: list[str], max_items: int, seed: int, checkpoints: int,
                   average_last: int, items_path: Path) -> dict[str, Any]:
    """The evaluate stage's work, inside its actor: the held-out split is read here and the
    per-item scores written here — paths travel to the actor, never the texts."""
    import json

    from tasks.store import write_parquet
    from tasks.tokenize import read_heldout

    data_dir = Path(data_dir)
    heldout = (read_raw_heldout(raw_paths, heldout_fraction, max_docs) if raw_paths is not None
               else read_heldout(data_dir, max_docs))
    seq_len = json.loads((data_dir / "meta.json").read_text())["seq_len"]
    res = evaluate_run(train_dir, heldout, seq_len, batch_size, tasks, max_items, seed,
                       checkpoints, average_last)
    write_parquet(pa.Table.from_pylist(res.pop("items")), Path(items_path))
    res["docs"] = len(heldout)
    return res
