"""A quality-ordered curriculum: tokenize carries each row's score, training reads rows in score
order, and the paper's remedy (constant lr, averaged last checkpoints) is the default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from test_repetition import cfg, run_sampling, setup, synthetic

from tasks import recipe as R
from tasks import tokenize
from tasks.stage import RunInfo
from tasks.stages.tokenize import Tokenize
from tasks.store import write_parquet
from tasks.train import PackedSequences, TrainConfig, lr_at, train
from tasks.train.curriculum import score_order

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SEQ = 8


def word_tokenizer(path: Path, n_words: int = 40) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {tokenize.EOS: 0, **{f"w{i}": i for i in range(1, n_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=tokenize.EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


def test_tokenize_carries_each_rows_token_weighted_score(tmp_path: Path):
    # (source, words, score): one token per word plus the end-of-text token
    docs = [("s", 5, 1.0), ("s", 9, 3.0), ("t", 3, None), ("s", 2, 0.5), ("t", 12, 2.0),
            ("t", 6, 4.0)]
    kept = tmp_path / "kept" / "part-00000.parquet"
    write_parquet(pa.table({
        "id": [f"d{i}" for i in range(len(docs))],
        "text": pa.array([" ".join(f"w{j % 30 + 1}" for j in range(n)) for _, n, _ in docs],
                         pa.large_string()),
        "source": [s for s, _, _ in docs], "lang": ["en"] * len(docs),
        "quality": pa.array([q for _, _, q in docs], pa.float64()),
    }), kept)
    tok = word_tokenizer(tmp_path / "tokenizer.json")
    out = tmp_path / "tokens"
    stats = tokenize.pack_shard(str(kept), str(tok), str(out), "00000", SEQ, 0.0, "quality")
    rest = tokenize.pack_remainders(str(out), SEQ, [stats])
    meta = tokenize.write_meta(out, tok, SEQ, [stats, rest], "quality")
    assert meta["row_score"] == "quality"
    assert all("score" in s for s in meta["train_shards"])

    # expected: each source's per-token scores, cut into rows like the tokens
    expect: dict[str, list[float]] = {}
    for src, n, q in docs:
        expect.setdefault(src, []).extend([np.nan if q is None else q] * (n + 1))
    data = PackedSequences(out, meta)
    got = data.row_scores()
    for src, rows in data.source_rows().items():
        stream = np.array(expect[src])
        full = stream[: len(stream) // SEQ * SEQ].reshape(-1, SEQ)
        want = [np.nanmean(r) if not np.isnan(r).all() else np.nan for r in full]
        assert np.allclose(got[rows], want, equal_nan=True), src
    # source t's first row is 4 unscored tokens and 4 of score 2.0: the mean of the scored
    t_rows = data.source_rows()["t"]
    assert got[t_rows[0]] == pytest.approx(2.0)

    # without a column nothing changes: no score files, meta as before
    plain = tokenize.pack_shard(str(kept), str(tok), str(tmp_path / "plain"), "00000", SEQ, 0.0)
    assert "score" not in plain and not (tmp_path / "plain" / "train" / "part-00000.score.npy"
                                         ).exists()
    assert "row_score" not in tokenize.write_meta(tmp_path / "plain", tok, SEQ, [plain])
    with pytest.raises(ValueError, match="no score column 'nope'"):
        tokenize.pack_shard(str(kept), str(tok), str(tmp_path / "x"), "00000", SEQ, 0.0, "nope")
    with pytest.raises(ValueError, match="not numeric"):
        tokenize.pack_shard(str(kept), str(tok), str(tmp_path / "x"), "00000", SEQ, 0.0, "source")


SCORES = {"a": np.array([3, 1, np.nan, 2, 0, 5, 4, 1.5, 9, 7], dtype=np.float32),
          "b": np.linspace(1, 0, 12, dtype=np.float32)}


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("cur") / "data", {"a": 10, "b": 12},
                     scores=SCORES)


@pytest.mark.parametrize("ascending", [True, False])
def test_training_rows_come_in_score_order(scored: Path, ascending: bool):
    config = cfg(2, batch_size=11, grad_accum=1, order={"by": "quality", "ascending": ascending},
                 checkpoint_every=1)
    s = setup(scored, config)
    mixture = s.mixture()
    rows = mixture.take(22, s.mix.probs(0, mixture.drawn()), 0, 0)  # one epoch of 22 rows
    scores = s.data.row_scores()[rows]
    assert np.isnan(scores[0])  # the row without a score comes first
    body = scores[1:]
    assert sorted(rows) == list(range(22))
    assert (np.diff(body) >= 0).all() if ascending else (np.diff(body) <= 0).all()
    # the next epoch repeats the order
    assert mixture.take(22, s.mix.probs(1, mixture.drawn()), 1, 0) == rows


def test_per_source_pools_each_keep_score_order(scored: Path):
    config = cfg(3, batch_size=6, grad_accum=1, order={"by": "quality"}, checkpoint_every=1,
                 source_weights={"a": 1.0})
    s = setup(scored, config)
    names, ids = s.data.source_ids()
    seen: dict[str, list[float]] = {"a": [], "b": []}
    mixture = s.mixture()
    for step in range(3):
        for r in mixture.take(6, s.mix.probs(step, mixture.drawn()), step, 0):
            seen[names[ids[r]]].append(float(s.data.row_scores()[r]))
    for src, vals in seen.items():
        body = [v for v in vals if not np.isnan(v)]
        assert body == sorted(body) and len(vals) > 3, src
    counted, _ = run_sampling(s, config)  # the plan counts a curriculum exactly too
    assert counted == {k: v["rows_drawn"] for k, v in s.plan["sources"].items()}


def test_replayed_rows_stay_shuffled(scored: Path, tmp_path: Path):
    from tasks.train.continual import InitSource

    old = synthetic(tmp_path / "old", {"x": 6})
    s = setup(scored, cfg(2, order={"by": "quality"}, checkpoint_every=1, replay=0.5),
              InitSource(tmp_path / "ckpt", old, "id"))
    assert set(s.pools) == {"train", "replay:"} and set(s.fixed) == {"train"}


def test_order_needs_rows_scored_by_its_column(scored: Path, tmp_path: Path):
    plain = synthetic(tmp_path / "plain", {"a": 4, "b": 4})
    with pytest.raises(ValueError, match="without row scores"):
        setup(plain, cfg(2, order={"by": "quality"}, checkpoint_every=1))
    with pytest.raises(ValueError, match="with row scores of 'quality'"):
        setup(scored, cfg(2, order={"by": "other"}, checkpoint_every=1))
    assert list(score_order(np.array([2.0, np.nan, 1.0]), True)) == [1, 2, 0]


def test_curriculum_pairs_constant_lr_with_checkpoint_averaging():
    c = TrainConfig(order={"by": "q"}, checkpoint_every=10)
    assert (c.schedule, c.average_last, c.keep_checkpoints) == ("constant", 6, 6)
    assert [lr_at(s, 100, c) for s in (19, 50, 99)] == [c.lr] * 3
    chosen = TrainConfig(order={"by": "q"}, schedule="wsd", min_lr_ratio=0.5, average_last=0)
    assert (chosen.schedule, chosen.average_last) == ("wsd", 0)  # a recipe's choice stays
    with pytest.raises(ValueError, match="checkpoint_every"):
        TrainConfig(order={"by": "q"})
    assert TrainConfig().schedule == "cosine"  # no curriculum: defaults as before
    # the recipe keeps the filled-in defaults
    raw = {"name": "t", "input": {"paths": ["x.jsonl"]},
           "stages": {"train": {"order": {"by": "q"}, "checkpoint_every": 4}}}
    t = R.parse_recipe(raw).train_config()
    assert (t.schedule, t.average_last) == ("constant", 6)


def test_tokenize_versions_a_row_score_only_for_a_curriculum(tmp_path: Path):
    raw = {"name": "t", "input": {"paths": ["data/sample/sample.jsonl"]}}
    plain = RunInfo("r", R.parse_recipe(raw), tmp_path, None)
    cur = RunInfo("r", R.parse_recipe({**raw, "stages": {"train": {
        "order": {"by": "gopher_quality_alpha_words_frac"}, "checkpoint_every": 5}}}),
        tmp_path, None)
    assert "row_score" not in Tokenize().config(plain, None)  # existing recipes: as before
    assert Tokenize().config(cur, None)["row_score"] == "gopher_quality_alpha_words_frac"


def test_curriculum_run_averages_its_last_checkpoints(scored: Path, tmp_path: Path):
    c = cfg(12, order={"by": "quality"}, checkpoint_every=2, warmup_steps=2, log_every=1)
    result = train(c, scored, tmp_path / "run", tmp_path / "m.jsonl")
    assert result["averaged_steps"] == [2, 4, 6, 8, 10, 12]
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lrs[1:] == [c.lr] * 11  # no decay after the warmup
