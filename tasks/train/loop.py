"""The training loop, in the spirit of nanoGPT: seeded data order, AdamW, linear warmup then
cosine, warmup-stable-decay (WSD) or constant, gradient clipping and accumulation, JSONL
metrics, and a Hugging Face checkpoint (safetensors + tokenizer) that `AutoModelForCausalLM` /
`AutoTokenizer` load offline.

What data each step sees -- pools, proportions (fixed or Aioli), max_epochs caps, curriculum
order, loss weights -- is prepared before the loop (tasks/train/sampling.py), with the plan of
the epochs each source will see. With `stability`, the old domain's loss is measured over the
first steps (tasks/train/stability.py).

The same loop runs data-parallel (DDP) when torch.distributed is initialised, as Ray Train's
TorchTrainer does for `workers > 1` (infra/ray.py). torch is imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import (
    CHECKPOINTS,
    average_checkpoints,
    complete_checkpoints,
    load_train_state,
    open_metrics,
    prune_checkpoints,
    read_train_state,
    remove_temp_dirs,
    run_identity,
    save_checkpoint,
    save_train_state,
    write_dir,
)
from .config import TrainConfig, lr_at
from .continual import INIT_INFO, InitSource, load_init_model, resolve_init
from .model import (
    add_dropout,
    barrier,
    batch_loss,
    build_model,
    flops_per_token,
    known_peak_flops,
    load_weights,
    make_optimizer,
    probe_losses,
    rank_world,
    resolve_device,
)
from .repetition import describe, repeat_warning
from .sampling import prepare
from .stability import ProbeRows, old_domain_dir, old_domain_rows, probe_schedule

log = logging.getLogger(__name__)


def train(
    config: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    metrics_path: Path | None = None,
    progress: bool = False,
    init: InitSource | None = None,
) -> dict[str, Any]:
    """Train one proxy model into out_dir/checkpoint and return a summary (also written to
    out_dir/summary.json).

    If out_dir holds resumable checkpoints from an earlier, interrupted call (same config and
    data, else ValueError), training continues from the newest complete one and the metrics file
    keeps its lines up to that step; otherwise training starts fresh (from `init`'s weights with
    config.init_from, resolved from the path when not given) and the metrics file is rewritten.

    Under torch.distributed (DDP), every rank runs this: each takes its share of every batch,
    rank 0 alone writes metrics and checkpoints.
    """
    import torch

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    rank, world = rank_world()
    meta = json.loads((data_dir / "meta.json").read_text())
    identity = run_identity(config, meta)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split over {world} workers")
    per_rank = config.batch_size // world

    if config.init_from and init is None:
        init = resolve_init(config.init_from)
    sampling = prepare(config, data_dir, meta, init)  # pools, mixer, caps, order, the plan
    data, mix, steps = sampling.data, sampling.mix, sampling.steps
    seq_len = data.seq_len
    tokens_per_step = config.tokens_per_step(seq_len)
    if rank == 0:
        log.info(describe(sampling.plan))
        if warning := repeat_warning(sampling.plan):
            log.warning(warning)

    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())  # set by Ray Train per rank
    use_bf16 = config.dtype == "bf16" or (config.dtype == "auto" and device.type == "cuda")
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
    )

    # seed every global RNG: torch draws the model init; the data order has its own generator
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    if init is not None:
        model = load_init_model(init, config.preset, meta, data_dir)
    else:
        model = build_model(config.preset, meta["vocab_size"], seq_len, meta["eos_id"])
    if config.dropout > 0:
        add_dropout(model, config.dropout)
    model = model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    optimizer = make_optimizer(model, config, fused=device.type == "cuda")
    order = sampling.mixture()
    probes = sampling.probe_rows(config.mixing.probe_rows) if config.mixing else []
    loss_weight = None if sampling.loss_weight is None else torch.from_numpy(
        sampling.loss_weight).float()
    # the stability gap: the old domain's loss on fixed rows of the init run's data
    old_rows: ProbeRows | None = None
    old_origin: str | None = None
    probe_at: set[int] = set()
    old_curve: list[list[float]] = []
    if config.stability is not None and init is not None:
        if (old_dir := old_domain_dir(config, init, meta["vocab_size"])) is None:
            log.warning("no old-domain loss: the data %s was trained on is unknown (set "
                        "train.replay_data)", init.checkpoint)
        else:
            rows, old_origin = old_domain_rows(old_dir, config.stability.probe_rows)
            old_rows = ProbeRows(rows)
            probe_at = set(probe_schedule(config.stability, steps))

    # carry on from the newest complete checkpoint an earlier (killed) call left behind
    if rank == 0:
        remove_temp_dirs(out_dir)
    barrier(world)
    start, resumed_from, loss_value, elapsed_before = 0, None, float("nan"), 0.0
    if saved := complete_checkpoints(out_dir):
        start, ckpt = saved[-1]
        state = read_train_state(ckpt, config, identity)  # refuses another config or data
        load_train_state(ckpt, state, model, optimizer, device)
        order = sampling.mixture(state["data_order"])
        mix.load_state(state.get("mixing", {}))
        loss_value, elapsed_before, resumed_from = state["loss"], state["elapsed_s"], start
        old_curve = list(state.get("old_domain_loss", []))  # the probes up to its step
        log.info("resuming %s from step %d of %d", out_dir, start, steps)
    fwd: Any = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        fwd = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        fwd = torch.compile(fwd)

    metrics_file = None
    if metrics_path is not None and rank == 0:
        metrics_file = open_metrics(Path(metrics_path), resumed_from)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"train {config.preset}", unit="step")

    def probe_old(at: int) -> None:
        """The old-domain loss after `at` updates, recorded (every rank: a collective)."""
        assert old_rows is not None
        with autocast:
            (value,) = probe_losses(model, old_rows, [np.arange(len(old_rows.rows))], per_rank,
                                    device, world)
        old_curve.append([at, value])
        if metrics_file is not None:
            metrics_file.write(json.dumps({"step": at, "old_domain_loss": value}) + "\n")
            metrics_file.flush()

    t0 = time.perf_counter() - elapsed_before  # elapsed_s counts all attempts' training time
    try:
        if start == 0 and 0 in probe_at:  # before the first update
            probe_old(0)
        for step in range(start, steps):
            lr = lr_at(step, steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if mix.probe_due(step):  # Aioli: per-source losses before/after estimation steps
                with autocast:
                    mix.observe(step, probe_losses(model, data, probes, per_rank, device,
                                                   world))
            p = mix.probs(step, order.drawn())
            if p is None:  # online mixing ran out of rows under max_epochs
                log.warning("step %d: the sources' max_epochs caps leave too few rows; "
                            "training stops here", step)
                steps = step
                break

            loss_sum = torch.zeros((), device=device)
            for micro in range(config.grad_accum):
                # every rank draws the same global batch and keeps its slice of it
                rows = order.take(config.batch_size, p, step, micro)[
                    rank * per_rank:(rank + 1) * per_rank]
                input_ids = torch.from_numpy(data.get(rows)).to(device, non_blocking=True)
                # DDP: all-reduce the gradients once, on the last micro-batch
                sync = world == 1 or micro == config.grad_accum - 1
                with nullcontext() if sync else fwd.no_sync():
                    with autocast:  # upweighting: each row's loss times its source's weight
                        w = None if loss_weight is None else loss_weight[torch.as_tensor(rows)]
                        loss, objective = batch_loss(fwd, input_ids, w,
                                                     sampling.mean_loss_weight(p))
                    # scale so the accumulated gradient is the mean over micro-batches
                    (objective / config.grad_accum).backward()
                loss_sum += loss.detach()

            # returns the norm before clipping; an infinite max norm only measures it
            max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            done = step + 1
            last = done == steps
            log_now = done % config.log_every == 0 or last
            every = config.checkpoint_every
            save_now = every > 0 and (done % every == 0 or last)
            if log_now or save_now:
                if world > 1:  # the mean over ranks is the global batch's loss
                    import torch.distributed as dist

                    dist.all_reduce(loss_sum)
                    loss_sum /= world
                # .item() syncs the device, so only on logging and checkpoint steps
                loss_value = loss_sum.item() / config.grad_accum
                elapsed = time.perf_counter() - t0
            if log_now and rank == 0:
                record = {
                    "step": done,
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "tokens": done * tokens_per_step,
                    "tokens_per_s": done * tokens_per_step / elapsed,
                    "elapsed_s": elapsed,
                }
                if len(sampling.pools) > 1:  # the proportions this step drew with, per pool
                    record["mix"] = dict(zip(sampling.pools, map(float, p), strict=True))
                if metrics_file is not None:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()  # so a watcher can tail the file live
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if done in probe_at:
                probe_old(done)
            if save_now and rank == 0:
                state = {
                    "step": done,
                    "tokens": done * tokens_per_step,
                    "loss": loss_value,
                    "lr": lr,
                    "total_steps": steps,
                    "data_order": order.state(),
                    "mixing": mix.state(),
                    **({"old_domain_loss": old_curve} if old_rows is not None else {}),
                    "elapsed_s": elapsed,
                    **identity,
                    "config": config.trajectory(),
                }
                write_dir(
                    out_dir / CHECKPOINTS / f"step-{done}",
                    lambda tmp, state=state: save_train_state(
                        tmp, model, optimizer, state, device, data_dir, meta
                    ),
                )
                prune_checkpoints(out_dir, config.keep_checkpoints)
            if bar is not None:
                bar.update(1)
    finally:
        if metrics_file is not None:
            metrics_file.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0

    averaged: list[int] = []
    if config.average_last > 1 and rank == 0:
        # the last k checkpoints (the final step is one): their mean is the final model
        last_k = complete_checkpoints(out_dir)[-config.average_last:]
        averaged = [s for s, _ in last_k]
        load_weights(model, average_checkpoints([d for _, d in last_k]), out_dir)

    ckpt = out_dir / "checkpoint"
    tokens = steps * tokens_per_step
    fpt = flops_per_token(model.config, seq_len)
    model_flops_per_s = fpt * tokens / seconds
    peak = config.peak_flops or known_peak_flops(device, use_bf16)
    summary = {
        "steps": steps,
        "tokens": tokens,
        "final_loss": loss_value,
        "params": n_params,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_token": fpt,
        "model_flops_per_s": model_flops_per_s,
        "peak_flops": peak,
        "mfu": model_flops_per_s / peak if peak else None,
        "checkpoint": str(ckpt),
        "resumed_from_step": resumed_from,
        "seed": config.seed,
        "workers": world,
        "init_from": str(init.checkpoint) if init is not None else None,
        "replay_data": str(sampling.replay_dir) if sampling.replay_dir is not None else None,
        "averaged_steps": averaged,
        "data_plan": sampling.plan,
        "epochs": sampling.epochs_seen(order),
        "mixing": mix.summary(),
        # the stability gap: [[step, old-domain loss], ...] and where its rows came from
        **({"old_domain_loss": old_curve, "old_domain_rows": old_origin}
           if old_rows is not None else {}),
        **identity,
    }
    if rank == 0:
        info = {"data_dir": os.path.relpath(data_dir.resolve(), ckpt.resolve()),
                "init_from": summary["init_from"], "steps": steps, "tokens": tokens,
                "averaged_steps": averaged, "seed": config.seed}

        def write_final(tmp: Path) -> None:
            save_checkpoint(model, data_dir, meta, tmp)
            (tmp / INIT_INFO).write_text(json.dumps(info, indent=1))

        write_dir(ckpt, write_final)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    barrier(world)
    return summary


def train_seeds(
    config: TrainConfig,
    seeds: list[int],
    data_dir: Path,
    out_dir: Path,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One proxy per seed, sequentially, each in out_dir/seed-<s>/ (checkpoint/, metrics.jsonl,
    checkpoints/) so that each run resumes on its own. Returns train()'s summaries in seed order.
    """
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"duplicate seeds: {seeds}")
    out_dir = Path(out_dir)
    summaries = []
    for seed in seeds:
        run_config = TrainConfig.model_validate({**config.model_dump(), "seed": seed})
        run_dir = out_dir / f"seed-{seed}"
        summaries.append(train(run_config, data_dir, run_dir, run_dir / "metrics.jsonl", progress))
    return summaries
