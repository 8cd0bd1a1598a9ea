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
