"""The Llama-style proxy model: building it, its optimizer, FLOPs per token and the device.

torch and transformers are imported inside the functions, so importing the package stays
torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import PRESETS, TrainConfig

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

# Dense bf16 peak FLOP/s by CUDA device name (first substring match wins), for MFU.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
]


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(preset: str, vocab_size: int, seq_len: int, eos_id: int) -> LlamaForCausalLM:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=seq_len,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        # GPT-2 convention: one <|endoftext|> token is BOS, EOS and (for batching) padding
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        attn_implementation="sdpa",
        **PRESETS[preset],
    )
    return LlamaForCausalLM(config)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, fused: bool) -> torch.optim.AdamW:
    # nanoGPT rule: decay every matrix (linear weights and the tied embedding), not the 1-D
    # RMSNorm gains (Llama has no biases).
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)


def flops_per_token(model_config: Any, seq_len: int) -> float:
    """Training FLOPs per token, forward + backward (PaLM appendix B; nanoGPT's estimate_mfu):

        6 * N  +  12 * L * d_attn * T

    N counts the weights that take part in a matmul: per layer the q, k, v, o projections and the
    gate/up/down MLP, plus the LM head (vocab x hidden; with tied embeddings that is the embedding
    matrix once, the lookup itself being free). RMSNorm gains are negligible and left out. Each
    such weight costs 2 FLOPs per token forward and 4 backward, hence 6N. The second term is
    attention over the context: QK^T and scores @ V each take 2 * T * d_attn FLOPs per token and
    layer forward, times 3 with backward; d_attn = n_heads * head_dim, T = seq_len, counted for the
    full T x T score matrix (no discount for the causal mask), as PaLM and nanoGPT do.
    """
    c = model_config
    hidden, layers, heads = c.hidden_size, c.num_hidden_layers, c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    attn = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o + k, v
    mlp = 3 * hidden * c.intermediate_size  # gate, up, down
    n = layers * (attn + mlp) + c.vocab_size * hidden
    return float(6 * n + 12 * layers * heads * head_dim * seq_len)


def known_peak_flops(device: torch.device, bf16: bool) -> float | None:
    """Dense bf16 peak of a known CUDA GPU (PEAK_BF16_FLOPS), else None (CPU, fp32, unknown)."""
    import torch

    if device.type != "cuda" or not bf16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def load_weights(model: LlamaForCausalLM, weights: dict[str, torch.Tensor], where: Any) -> None:
    """`weights` into `model`; ValueError naming `where` unless they fit (a tied lm_head may be
    absent)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{where}: weights do not fit the model ({missing=}, {unexpected=})")


def rank_world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised (Ray Train's DDP)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def add_dropout(model: LlamaForCausalLM, p: float) -> None:
    """Dropout while training (Llama has none of its own but on attention weights): on the
    token embeddings, the attention weights, and each block's attention and MLP outputs before
    they join the residual stream -- GPT-2's three places. Forward hooks, so the saved
    checkpoint is a plain Llama; in eval mode they do nothing."""
    import torch.nn.functional as F

    def drop(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (F.dropout(output[0], p, module.training), *output[1:])
        return F.dropout(output, p, module.training)

    model.model.embed_tokens.register_forward_hook(drop)
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = p  # read by the attention kernel while training
        layer.self_attn.register_forward_hook(drop)
        layer.mlp.register_forward_hook(drop)


def row_losses(fwd: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of each row (the model's own loss is their mean)."""
    import torch.nn.functional as F

    logits = fwd(input_ids=input_ids, use_cache=False).logits[:, :-1].float()
    target = input_ids[:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                          reduction="none")
    return tok.view(target.shape).mean(dim=1)


def batch_loss(fwd: Any, input_ids: torch.Tensor, weights: torch.Tensor | None = None,
               mean_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's mean next-token loss, the objective to minimise): the same loss, or with
    per-row `weights` their weighted mean divided by the expected weight of a row, so equal
    weights train like none and only their ratios matter."""
    if weights is None:
        # labels = inputs: the model shifts them for next-token loss
        loss = fwd(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        return loss, loss
    per_row = row_losses(fwd, input_ids)
    return per_row.mean(), (per_row * weights.to(per_row.device)).mean() / mean_weight


def probe_losses(model: LlamaForCausalLM, data: Any, probes: list[Any], batch_size: int,
                 device: torch.device, world: int) -> list[float]:
    """Mean loss of each probe set of rows (no gradient, eval mode: no dropout); under DDP rank
    0's values, so every rank takes the same mixing decision."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for rows in probes:
            total = 0.0
            for i in range(0, len(rows), batch_size):
                ids = torch.from_numpy(data.get(rows[i:i + batch_size].tolist())).to(device)
                total += float(row_losses(model, ids).sum())
            out.append(total / len(rows))
    model.train()
    if world > 1:
        import torch.distributed as dist

        values = torch.tensor(out, dtype=torch.float64, device=device)
        dist.broadcast(values, src=0)
        out = values.tolist()
    return out
