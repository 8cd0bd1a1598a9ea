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
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from tasks.train import resolve_device


def _windows(ids: list[int], seq_len: int) -> list[list[int]]:
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
        windows.extend((doc_idx, w) for w in _windows([eos_id, *enc.ids], seq_len))
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
    return {"overall": overall, "by_source": by_source}
