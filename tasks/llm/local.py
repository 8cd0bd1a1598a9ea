"""Local models on Ray actors: a pool of actors, each holding one model (one GPU each when the
cluster has GPUs), fed batches of requests. vLLM's engine when it is installed, else
transformers' ``generate``. The same code runs on CPU (transformers), which is what the tests
exercise; the vLLM path needs a GPU machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from tasks.llm.base import Request, Result, Sampling


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class Generator:
    """One model in one process: ``generate(batch)`` -> results in order."""

    def __init__(self, model: str, sampling: Sampling, engine: str = "auto",
                 dtype: str = "auto"):
        self.model_name = model
        self.sampling = sampling
        self.engine = ("vllm" if vllm_available() else "transformers") if engine == "auto" \
            else engine
        if self.engine == "vllm":
            from vllm import LLM

            self.llm = LLM(model=model, dtype=dtype)
        else:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tok = AutoTokenizer.from_pretrained(model)
            if self.tok.pad_token is None:
                self.tok.pad_token = self.tok.eos_token or self.tok.unk_token
            self.tok.padding_side = "left"  # decoder-only batches pad on the left
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self.lm = AutoModelForCausalLM.from_pretrained(
                model, dtype=torch.bfloat16 if self.device == "cuda" else torch.float32
            ).to(self.device).eval()

    def _render(self, req: Request) -> str:
        if req.prompt is not None:
            return req.prompt
        assert req.messages is not None
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(req.messages, tokenize=False,
                                                add_generation_prompt=True)
        # no chat template (a base model): the Vicuna layout WRAP's appendix uses
        parts = [m["content"] for m in req.messages if m["role"] == "system"]
        users = [m["content"] for m in req.messages if m["role"] == "user"]
        return "\n".join(parts + [f"USER: {u}" for u in users]) + "\nASSISTANT:"

    def generate(self, batch: list[Request]) -> list[Result]:
        t0 = time.perf_counter()
        s = self.sampling
        if self.engine == "vllm":
            from vllm import SamplingParams

            sp = SamplingParams(temperature=s.temperature, top_p=s.top_p,
                                max_tokens=s.max_tokens, seed=s.seed, stop=s.stop or None)
            chats = [r.messages for r in batch if r.messages is not None]
            outs = self.llm.chat(chats, sp) if len(chats) == len(batch) else \
                self.llm.generate([r.prompt for r in batch], sp)
            dt = (time.perf_counter() - t0) / max(len(batch), 1)
            return [Result(r.key, o.outputs[0].text, len(o.prompt_token_ids),
                           len(o.outputs[0].token_ids), o.outputs[0].finish_reason or "", dt)
                    for r, o in zip(batch, outs, strict=True)]
        import torch

        texts = [self._render(r) for r in batch]
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        if s.seed is not None:
            torch.manual_seed(s.seed)
        with torch.no_grad():
            out = self.lm.generate(
                **enc, max_new_tokens=s.max_tokens, do_sample=s.temperature > 0,
                temperature=s.temperature if s.temperature > 0 else None,
                top_p=s.top_p if s.temperature > 0 else None,
                pad_token_id=self.tok.pad_token_id)
        n_in = enc["input_ids"].shape[1]
        dt = (time.perf_counter() - t0) / max(len(batch), 1)
        results = []
        eos = self.tok.eos_token_id
        for i, r in enumerate(batch):
            gen = out[i, n_in:].tolist()
            if eos is not None and eos in gen:
                gen, finish = gen[:gen.index(eos)], "stop"
            else:
                finish = "length"
            text = self.tok.decode(gen, skip_special_tokens=True)
            for st in s.stop:
                if st in text:
                    text, finish = text[:text.index(st)], "stop"
            prompt_len = int(enc["attention_mask"][i].sum())
            results.append(Result(r.key, text, prompt_len, len(gen), finish, dt))
        return results


class RayBackend:
    """A pool of ``Generator`` actors; batches go to whichever actor is free, and results come
    back (and are stored) batch by batch."""

    name = "local"

    def __init__(self, model: str, sampling: Sampling, actors: int = 1, batch_size: int = 8,
                 engine: str = "auto"):
        from infra import ray as ray_engine

        self.ray = ray_engine.init()
        self.model = model
        self.batch_size = batch_size
        gpus = 1.0 if ray_engine.gpus_available() >= 1 else 0.0
        cls = self.ray.remote(num_gpus=gpus, num_cpus=1)(Generator)
        self.actors = [cls.remote(model, sampling, engine) for _ in range(actors)]
        self.requests = 0

    def run(self, requests: Iterable[Request], on_result: Callable[[Result], None]) -> None:
        ray = self.ray
        it = iter(requests)
        free = list(self.actors)
        pending: dict[Any, Any] = {}  # future -> actor

        def next_batch() -> list[Request]:
            b = []
            for r in it:
                b.append(r)
                if len(b) >= self.batch_size:
                    break
            return b

        while True:
            while free:
                batch = next_batch()
                if not batch:
                    break
                actor = free.pop()
                pending[actor.generate.remote(batch)] = actor
                self.requests += len(batch)
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for fut in ready:
                free.append(pending.pop(fut))
                for res in ray.get(fut):
                    on_result(res)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": 0, "failed": 0, "breaker_opened": 0,
                "paused_s": 0.0}

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []


def run_inline(model: str, sampling: Sampling, batch: list[Request],
               engine: str = "transformers") -> list[Result]:
    """One generator in this process (tests, notebooks)."""
    return Generator(model, sampling, engine).generate(batch)


