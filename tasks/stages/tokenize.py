"""Stage ``tokenize``: train (or reuse) a BPE tokenizer, pack documents into token rows per
source, split off the held-out documents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tasks.identity import file_digest
from tasks.report import DROPPED
from tasks.stage import Executor, Manifest, RunInfo, Stage, Upstream
from tasks.store import StageDir, merge_counts, shard_key


def given_tokenizer(run: RunInfo) -> Path | None:
    """The tokenizer.json to use instead of training one: with train.init_from the init run's
    (the model only knows its ids), else a user's tokenize.tokenizer; None = train one."""
    from tasks import tokenize
    from tasks.train import resolve_init

    cfg, tcfg = run.recipe.stages.tokenize, run.recipe.train_config()
    if cfg.tokenizer:
        tokenize.check_tokenizer(Path(cfg.tokenizer))
    if not tcfg.init_from:
        return Path(cfg.tokenizer) if cfg.tokenizer else None
    init = resolve_init(tcfg.init_from, run.data_root)
    vocab = tokenize.check_tokenizer(init.tokenizer)
    if init.data_dir is not None and (init.data_dir / "manifest.json").is_file():
        # BPE may stop short of vocab_size on little text: compare what the recipes asked for
        config = json.loads((init.data_dir / "manifest.json").read_text())["config"]
        vocab = config.get("tokenize", config)["vocab_size"]  # (older manifests: flat)
    if cfg.tokenizer:
        if Path(cfg.tokenizer).read_bytes() != init.tokenizer.read_bytes():
            raise ValueError(f"tokenize.tokenizer {cfg.tokenizer} is not the tokenizer of "
                             f"train.init_from {tcfg.init_from!r} ({init.tokenizer}); drop one")
    elif cfg.vocab_size != vocab:
        raise ValueError(f"tokenize.vocab_size is {cfg.vocab_size}, but train.init_from "
                         f"{tcfg.init_from!r} was trained with a vocabulary of {vocab}; its "
                         f"tokenizer is reused, so set tokenize.vocab_size: {vocab}")
    return init.tokenizer


def row_score_column(run: RunInfo) -> str | None:
    """The score column each row carries: train.order.by (a curriculum) or train.stability.by
    (the stability gap's subset); TrainConfig allows one column per run."""
    tcfg = run.recipe.train_config()
    if tcfg.order is not None:
        return str(tcfg.order.by)
    return tcfg.stability.by if tcfg.stability is not None else None


def train_tokenizer(kept: list[str], cfg: Any, out: str) -> str:
    from tasks import tokenize

    texts = tokenize.iter_train_texts(kept, cfg.heldout_fraction, cfg.tokenizer_train_bytes)
    tokenize.train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, Path(out))
    return out


class Tokenize(Stage):
    name = "tokenize"
    # 2: held-out docs keep their lang; 3: rows packed per source, indexed; 4: each source's
    # partial rows carried across shards (train/remainder.npy), only the very last dropped
    code_version = 4
    recipe_key = "stages.tokenize"
    outputs = ("data_dir",)
    produces_docs = False
    description = "BPE tokenizer, token rows packed per source, held-out split"

    def _given(self, run: RunInfo) -> Path | None:
        if not hasattr(self, "_given_path"):
            self._given_path = given_tokenizer(run)
        return self._given_path

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        given = self._given(run)
        # a given tokenizer: its content, not its path, is what the stage depends on
        config = {"tokenize": run.recipe.stages.tokenize,
                  "given_tokenizer": file_digest(given) if given is not None else None}
        if score := row_score_column(run):  # only then: other recipes keep their versions
            config["row_score"] = score
        return config

    def run(self, run: RunInfo, up: Upstream, out: StageDir, ex: Executor,
            variant: Any = None) -> dict[str, Any]:
        from tasks import tokenize

        cfg, given = run.recipe.stages.tokenize, self._given(run)
        kept = [run.abs(rel) for rel in up.docs.kept]
        tok_path = out.path / "tokenizer.json"
        if given is not None:
            shutil.copyfile(given, tok_path)
        elif not tok_path.exists():
            ex.task(train_tokenizer, kept, cfg, str(tok_path), desc="tokenizer")
        score = row_score_column(run)  # each row's score packed with it (order, stability)
        jobs = [(shard_key(p), (p, str(tok_path), str(out.path), shard_key(p), cfg.seq_len,
                                cfg.heldout_fraction, score)) for p in kept]
        stats = ex.shards(out, tokenize.pack_shard, jobs, "tokenize")
        # after every shard: each source's carried tokens packed in shard order (idempotent,
        # so a re-run after a crash here writes the same rows)
        rest = ex.task(tokenize.pack_remainders, str(out.path), cfg.seq_len, stats,
                       desc="tokenize remainders")
        meta = tokenize.write_meta(out.path, tok_path, cfg.seq_len, [*stats, rest], score)
        by_source: dict[str, int] = {}
        for s in stats:
            for src, n in s["tokens_by_source"].items():
                by_source[src] = by_source.get(src, 0) + n
        dropped = rest["tokens_dropped"]
        return {**merge_counts(stats),
                "train_docs": sum(s["train_docs"] for s in stats),
                "heldout_docs": sum(s["heldout_docs"] for s in stats),
                "tokens": sum(s["tokens"] for s in stats),
                "train_sequences": sum(s["n_seq"] for s in stats) + rest["n_seq"],
                "tokens_dropped": sum(dropped.values()), "tokens_dropped_by_source": dropped,
                "tokens_by_source": by_source, "vocab_size": meta["vocab_size"],
                "outputs": {"data_dir": out.rel(out.path)}}

    def after(self, run: RunInfo, up: Upstream, manifest: Manifest, variant: Any = None
              ) -> None:
        """Tokens lost in packing (each source's last tokens short of a row) as metrics."""
        dropped = manifest.extra.get("tokens_dropped_by_source", {})
        run.catalog.record_metrics(run.run_id, [
            (0, DROPPED, float(sum(dropped.values()))),
            *[(0, f"{DROPPED}.{src}", float(n)) for src, n in sorted(dropped.items())]])
