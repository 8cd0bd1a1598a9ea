"""Language id reads samples spread over a text (tasks/langid.py): what a sample holds, when
the larger one is read, and that the label is whole-text fastText's on the sample corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import langid

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"


def test_a_sample_is_pieces_spread_over_the_text_cut_at_spaces() -> None:
    short = "word " * 99
    assert langid.sample(short, 10, 50) == short  # not longer than the sample: whole
    words = [f"w{i:04d}" for i in range(2000)]
    text = " ".join(words)
    got = langid.sample(text, 10, 50)
    assert set(got.split()) <= set(words)  # whole words only: pieces cut at spaces
    assert len(got) <= 10 * 50 + 9 and len(got.split()) >= 10 * 7  # ~8 words a piece
    positions = [int(w[1:]) for w in got.split()]
    assert positions[0] == 0
    assert positions == sorted(positions) and positions[-1] > 1750  # spread to the end
    assert langid.sample("x" * 1000, 4, 10) == " ".join(["x" * 10] * 4)  # no space: cut


def test_the_larger_sample_is_read_only_when_unsure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = langid.sample

    def spy(text: str, windows: int, width: int) -> str:
        calls.append((windows, len(text)))
        return real(text, windows, width)

    monkeypatch.setattr(langid, "sample", spy)
    long_en = "The keeper of the lighthouse wrote in his log every evening. " * 40
    texts = [long_en, "Bonjour à tous, voici le résumé.", long_en.upper()]
    langs, scores = langid.identify(texts)
    assert langs == ["en", "fr", "en"] and all(s > langid.CONFIDENT for s in scores)
    assert [w for w, _ in calls] == [langid.SAMPLE] * 3
    calls.clear()
    monkeypatch.setattr(langid, "CONFIDENT", 1.01)  # never sure: long texts read again
    langid.identify(texts)
    assert [w for w, _ in calls] == [langid.SAMPLE] * 3 + [langid.SAMPLE_MORE] * 2


def test_sampled_labels_are_whole_text_labels_on_the_sample_corpus() -> None:
    texts = [json.loads(line)["text"] for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    got, _ = langid.identify(texts)
    want, _ = langid.identify_whole(texts)
    long_ = [i for i, t in enumerate(texts) if len(t) > langid.SAMPLE * langid.WIDTH]
    assert len(long_) > 500  # the sample has hundreds of texts longer than a sample
    agree = sum(got[i] == want[i] for i in long_) / len(long_)
    assert agree >= 0.99, agree
