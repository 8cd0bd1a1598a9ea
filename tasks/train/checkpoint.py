"""Checkpoints: the final Hugging Face one and the resumable ones, without pickle.

out_dir/checkpoints/step-<N>/ holds what `save_checkpoint` writes (so it can be evaluated like
the final one) plus the training state:
  train_state.safetensors  optimizer state per param index ("optim.<i>.exp_avg", ".exp_avg_sq",
                           ".step") and RNG states ("rng.torch_cpu", "rng.torch_cuda") as uint8
  train_state.json         step, tokens, loss, lr and total steps, data position (epoch, index),
                           elapsed time, numpy/python RNG, optimizer groups, config and data hash
  COMPLETE                 written last; a step dir without it is never resumed from
Each dir is written under a temporary name and renamed into place once complete; only the newest
`keep_checkpoints` are kept, and `average_checkpoints` averages some of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from tasks.store import fsync_dir, fsync_file

from .config import TrainConfig
from .model import load_weights

if TYPE_CHECKING:
    import torch
    from transformers import LlamaForCausalLM

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"


def save_checkpoint(
    model: LlamaForCausalLM, data_dir: Path, meta: dict[str, Any], ckpt: Path
) -> None:
    """Model (safetensors) and tokenizer side by side, loadable with the Auto* classes."""
    from transformers import PreTrainedTokenizerFast

    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ckpt)  # safetensors is the only format in transformers 5
    eos = meta["eos_token"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(data_dir / "tokenizer.json"),
        eos_token=eos,
        bos_token=eos,
        pad_token=eos,
    )
    tokenizer.save_pretrained(ckpt)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def run_identity(config: TrainConfig, meta: dict[str, Any]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the trajectory config and the data's meta."""
    return {"config_hash": _digest(config.trajectory()), "data_hash": _digest(meta)}


def complete_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of the fully written resumable checkpoints under out_dir, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    found = []
    for d in root.glob("step-*"):
        step = d.name.removeprefix("step-")
        if step.isdigit() and (d / COMPLETE).is_file():
            found.append((int(step), d))
    return sorted(found)


def write_dir(final: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) into a temporary sibling dir, then swap it in for `final` by renames, so a
    reader (or a killed process) never sees a half-written `final`."""
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    for d in (tmp, old):
        shutil.rmtree(d, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    # durable before it is swapped in: after a power loss `final` never names lost data
    for f in sorted(tmp.rglob("*")):
        (fsync_file if f.is_file() else fsync_dir)(f)
    fsync_dir(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def remove_temp_dirs(out_dir: Path) -> None:
    """Leftovers of a process killed in the middle of write_dir."""
    for root in (out_dir, out_dir / CHECKPOINTS):
        for d in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
            shutil.rmtree(d, ignore_errors=True)


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state(device)
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return tensors, {
        "numpy": {"keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def _set_rng_state(
    tensors: dict[str, torch.Tensor], saved: dict[str, Any], device: torch.device
) -> None:
    import torch

    torch.set_rng_state(tensors["rng.torch_cpu"])
    if device.type == "cuda" and "rng.torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"], device)
    n = saved["numpy"]
    keys = np.array(n["keys"], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached"]))
    p = saved["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def save_train_state(
    ckpt: Path,
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    device: torch.device,
    data_dir: Path,
    meta: dict[str, Any],
) -> None:
    """One resumable checkpoint into the (temporary) dir `ckpt`; COMPLETE is written last."""
    from safetensors.torch import save_file

    save_checkpoint(model, data_dir, meta, ckpt)
    opt = optimizer.state_dict()
    tensors = {
        f"optim.{i}.{name}": t.detach().cpu().contiguous()
        for i, per_param in opt["state"].items()
        for name, t in per_param.items()
    }
    rng_tensors, rng_json = _rng_state(device)
    tensors.update(rng_tensors)
    save_file(tensors, ckpt / "train_state.safetensors")
    groups = [{**g, "betas": list(g["betas"])} for g in opt["param_groups"]]
    state = {**state, "optimizer_groups": groups, "rng": rng_json}
    (ckpt / "train_state.json").write_text(json.dumps(state, indent=1))
    (ckpt / COMPLETE).write_text("")


def read_train_state(ckpt: Path, config: TrainConfig, identity: dict[str, str]) -> dict[str, Any]:
    """The JSON half of a checkpoint; ValueError if it belongs to another config or data."""
    state = json.loads((ckpt / "train_state.json").read_text())
    if state["config_hash"] != identity["config_hash"]:
        old, new = state["config"], config.trajectory()
        diff = ", ".join(
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        )
        raise ValueError(
            f"{ckpt} was written with another train config ({diff}); resume with the same "
            "config or train into a fresh out_dir"
        )
    if state["data_hash"] != identity["data_hash"]:
        raise ValueError(
            f"{ckpt} was trained on other data (meta.json differs); resume on the same data "
            "directory or train into a fresh out_dir"
        )
    return state


def load_train_state(
    ckpt: Path,
    state: dict[str, Any],
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> None:
    """Weights, optimizer moments and RNG states of checkpoint `ckpt` into the live objects."""
    from safetensors.torch import load_file

    load_weights(model, load_file(ckpt / "model.safetensors"), ckpt)
    tensors = load_file(ckpt / "train_state.safetensors")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = t
    current = optimizer.state_dict()["param_groups"]
    groups = []
    for saved, cur in zip(state["optimizer_groups"], current, strict=True):
        # hyperparameters from the checkpoint; implementation choices from this process
        impl = {k: cur[k] for k in ("foreach", "fused", "capturable") if k in cur}
        groups.append({**saved, "betas": tuple(saved["betas"]), **impl})
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    _set_rng_state(tensors, state["rng"], device)


def prune_checkpoints(out_dir: Path, keep: int) -> None:
    """Keep the `keep` newest complete checkpoints; drop older ones and incomplete step dirs."""
    complete = complete_checkpoints(out_dir)
    doomed = [d for _, d in complete[: max(0, len(complete) - keep)]]
    doomed += [d for d in (out_dir / CHECKPOINTS).glob("step-*") if not (d / COMPLETE).is_file()]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)


def open_metrics(path: Path, resumed_from: int | None) -> TextIO:
    """The metrics JSONL to append to: a fresh run replaces the file, a resumed one keeps the
    lines up to its checkpoint's step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if resumed_from is None:
        return path.open("w")
    _truncate_metrics(path, resumed_from)  # drop steps the checkpoint does not cover
    return path.open("a")


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metrics lines up to `step` (and no torn last line); the resumed run appends."""
    keep = []
    if path.exists():
        for line in path.read_text().splitlines(keepends=True):
            try:
                if not line.endswith("\n") or json.loads(line)["step"] > step:
                    break
            except (json.JSONDecodeError, KeyError, TypeError):
                break
            keep.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def average_checkpoints(dirs: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the model.safetensors of `dirs` (accumulated in float64)."""
    from safetensors.torch import load_file

    if not dirs:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    dtypes = {}
    for d in dirs:
        for k, t in load_file(Path(d) / "model.safetensors").items():
            dtypes[k] = t.dtype
            total[k] = total[k] + t.double() if k in total else t.double()
    return {k: (t / len(dirs)).to(dtypes[k]) for k, t in total.items()}
