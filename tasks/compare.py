"""Compare runs: per task and metric, the difference with a paired interval over the items both
runs scored (and their seeds), the minimum detectable effect, a verdict, and the task's
signal-to-noise ratio; plus an aggregate over the multiple-choice tasks that can leave out
low-SNR tasks. Runs scored on different held-out data share no item: ``overlap`` says so, and
``score_on`` scores every model on one held-out set instead."""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import report_decisions
from tasks import snr as snr_choice
from tasks.evalsets import N_CHOICES
from tasks.stats import aggregate, paired_bootstrap, snr

if TYPE_CHECKING:
    from tasks.catalog import Catalog

HIGHER_IS_BETTER = {"bpb": False, "acc": True, "acc_norm": True, "acc_centred": True}
FINAL = "final"  # items.parquet's `checkpoint` for the scored model; others are "step-N"
AGGREGATE = ("aggregate", "acc_centred")
AGGREGATE_BPB = ("aggregate", "bpb")  # mean gold-continuation bits per byte over the tasks

Items = dict[tuple[str, str], dict[str, tuple[float, float]]]


def load_items(stage_path: Path) -> dict[str, Items]:
    """checkpoint -> (task, metric) -> item_id -> (num, den), from an evaluate stage's
    items.parquet. Files written before checkpoints were scored hold the final model only."""
    path = Path(stage_path) / "items.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no per-item scores at {path} (evaluated before they existed?)")
    out: dict[str, Items] = {}
    for r in pq.read_table(path).to_pylist():
        ck = r.get("checkpoint") or FINAL
        keys = [(r["task"], r["metric"])]
        if r["task"] == "heldout" and r.get("source"):  # bpb per source, paired the same way
            keys.append((f"heldout/{r['source']}", r["metric"]))
        for key in keys:
            out.setdefault(ck, {}).setdefault(key, {})[r["item_id"]] = (r["num"], r["den"])
    return out


def items_of(stage_path: Path) -> Items:
    """The final model's items (see load_items)."""
    return load_items(stage_path).get(FINAL, {})


def _value(items: dict[str, tuple[float, float]], ids: list[str]) -> float:
    den = sum(items[i][1] for i in ids if i in items)
    return sum(items[i][0] for i in ids if i in items) / den if den else float("nan")


def noise_values(loaded: list[dict[str, Items]], key: tuple[str, str], ids: list[str]
                 ) -> list[float]:
    """One model's values of a metric, one per seed and checkpoint: each seed's scored last
    checkpoints (the final step is one), else its final model."""
    out = []
    for seed in loaded:
        steps = [ck for name, ck in seed.items() if name != FINAL and key in ck]
        out += [_value(ck[key], ids) for ck in steps or [seed.get(FINAL, {})] if key in ck]
    return out


def _mc_tasks(keys: set[tuple[str, str]], metric: str = "acc") -> list[str]:
    return sorted(t for t, m in keys if m == metric and not t.startswith("heldout")
                  and (t, "acc") in keys)


def compare_many(models: dict[str, list[Path]], baseline: str | None = None, n_boot: int = 2000,
                 seed: int = 0, min_snr: float | None = None) -> dict[str, Any]:
    """models: name -> its evaluate stage folders (one per seed). Every other model is compared
    with ``baseline`` (default: the first). SNR per task is computed across all models.

    Returns {"rows": [...one per (model, task, metric)...], "snr": [...per task and metric...],
    "choice": [...per task: accuracy or bits per byte, by SNR (tasks/snr.py)...]}; a row's
    ``decides`` says whether its metric is its task's deciding one. Items are paired by id:
    only items every model scored are used."""
    names = list(models)
    baseline = baseline or names[0]
    loaded = {n: [load_items(p) for p in ps] for n, ps in models.items()}
    finals = {n: [s.get(FINAL, {}) for s in ls] for n, ls in loaded.items()}
    every = [s for ls in finals.values() for s in ls]
    keys = set.intersection(*(set(s) for s in every)) if every else set()
    common = {k: sorted(set.intersection(*(set(s[k]) for s in every))) for k in keys}
    common = {k: ids for k, ids in common.items() if ids}

    snr_rows = []
    snr_of: dict[tuple[str, str], dict[str, float]] = {}
    for key, ids in sorted(common.items()):
        s = snr({n: noise_values(loaded[n], key, ids) for n in names})
        snr_of[key] = s
        snr_rows.append({"task": key[0], "metric": key[1], **s,
                         "checkpoints": max(len(x) for x in loaded[names[0]]),
                         "seeds": max(len(loaded[n]) for n in names)})
    # the aggregates' tasks: multiple-choice tasks whose SNR is not known to be too low
    kept: dict[tuple[str, str], list[str]] = {}
    dropped: dict[tuple[str, str], list[str]] = {}
    for agg, metric in ((AGGREGATE, "acc"), (AGGREGATE_BPB, "bpb")):
        mc = _mc_tasks(set(common), metric)
        kept[agg] = [t for t in mc if min_snr is None or math.isnan(snr_of[(t, metric)]["snr"])
                     or snr_of[(t, metric)]["snr"] >= min_snr]
        dropped[agg] = [t for t in mc if t not in kept[agg]]
        if kept[agg]:
            per_model = {n: _aggregate_values(loaded[n], kept[agg], common, metric)
                         for n in names}
            snr_of[agg] = snr(per_model)
            snr_rows.append({"task": agg[0], "metric": agg[1], **snr_of[agg],
                             "checkpoints": max(len(x) for x in loaded[names[0]]),
                             "seeds": max(len(loaded[n]) for n in names)})

    def arr(sets: list[Items], key: tuple[str, str], part: int) -> np.ndarray:
        return np.array([[s[key][i][part] for i in common[key]] for s in sets])

    rows = []
    for name in names:
        if name == baseline:
            continue
        fa, fb = finals[baseline], finals[name]
        for key in sorted(common):
            task, metric = key
            c = paired_bootstrap(arr(fa, key, 0), arr(fa, key, 1), arr(fb, key, 0),
                                 arr(fb, key, 1), HIGHER_IS_BETTER.get(metric, True), metric,
                                 n_boot, seed=seed)
            rows.append({"model": name, "task": task, **c.as_dict(), **snr_of[key],
                         "note": ""})
        for agg, metric in ((AGGREGATE, "acc"), (AGGREGATE_BPB, "bpb")):
            if not kept[agg]:
                continue
            # centred accuracy: (acc - 1/4) / (3/4); bits per byte as it is
            scale = 1 / (1 - 1 / N_CHOICES) if metric == "acc" else 1.0
            parts = [(arr(fa, (t, metric), 0), arr(fa, (t, metric), 1),
                      arr(fb, (t, metric), 0), arr(fb, (t, metric), 1)) for t in kept[agg]]
            c = aggregate(parts, HIGHER_IS_BETTER[agg[1]], agg[1], n_boot, seed=seed,
                          scale=scale)
            a = c.as_dict()
            if metric == "acc":
                shift = scale / N_CHOICES  # centre the levels; differences are unchanged
                a.update(a=a["a"] - shift, b=a["b"] - shift)
            note = "mean over " + ", ".join(kept[agg])
            if dropped[agg]:
                note += f"; dropped (SNR < {min_snr:g}): " + ", ".join(dropped[agg])
            rows.append({"model": name, "task": agg[0], **a, **snr_of[agg], "note": note})
    choice = snr_choice.choose(snr_rows)
    snr_choice.mark(rows, choice)
    return {"rows": rows, "snr": snr_rows, "choice": choice, "baseline": baseline,
            "dropped": dropped[AGGREGATE], "dropped_bpb": dropped[AGGREGATE_BPB]}


def _aggregate_values(loaded: list[dict[str, Items]], tasks: list[str],
                      common: dict[tuple[str, str], list[str]], metric: str = "acc"
                      ) -> list[float]:
    """One model's aggregate (mean over ``tasks``: centred accuracy, or bits per byte), one
    value per seed and scored checkpoint, for its noise."""
    out = []
    for seed in loaded:
        steps = [ck for name, ck in seed.items() if name != FINAL]
        for ck in steps or [seed.get(FINAL, {})]:
            if all((t, metric) in ck for t in tasks):
                v = float(np.mean([_value(ck[(t, metric)], common[(t, metric)])
                                   for t in tasks]))
                out.append((v - 1 / N_CHOICES) / (1 - 1 / N_CHOICES) if metric == "acc" else v)
    return out


def compare(a_paths: list[Path], b_paths: list[Path], n_boot: int = 2000, seed: int = 0,
            min_snr: float | None = None) -> list[dict[str, Any]]:
    """a_paths/b_paths: the evaluate stage folders of each side's seeds (one per seed)."""
    out = compare_many({"a": list(a_paths), "b": list(b_paths)}, "a", n_boot, seed, min_snr)
    return [{k: v for k, v in r.items() if k != "model"} for r in out["rows"]]


def scored_items(stage_paths: list[Path]) -> set[tuple[str, str]]:
    """(task, item_id) pairs the final model of every seed scored (the per-source bpb keys,
    which repeat the held-out items, left out)."""
    sets = [{(task, i) for (task, _metric), ids in items_of(p).items()
             if not task.startswith("heldout/") for i in ids} for p in stage_paths]
    return set.intersection(*sets) if sets else set()


def overlap(models: dict[str, list[Path]]) -> dict[str, Any]:
    """How many items each model scored and how many all of them did (what a comparison can
    pair): {"items": {label: n}, "shared": n}."""
    items = {name: scored_items(paths) for name, paths in models.items()}
    shared = set.intersection(*items.values()) if items else set()
    return {"items": {name: len(s) for name, s in items.items()}, "shared": len(shared)}


def unique_labels(names: list[str]) -> list[str]:
    """Names made unique by position (a run or recipe compared with itself is a valid null
    comparison)."""
    out: list[str] = []
    for i, name in enumerate(names):
        out.append(name if name not in out else f"{name}#{i}")
    return out


def evaluate_paths(stages: list[dict[str, Any]]) -> list[Path]:
    """A run's evaluate stage folders (one per seed), from its catalog or summary stages."""
    return [Path(s["output_path"]) for s in stages if s["stage"] == "evaluate"]


def decide(catalog: Catalog, models: dict[str, list[Path]], run_ids: dict[str, str],
           title: str, report_path: Path, n_boot: int = 2000, min_snr: float | None = None,
           ablation: str | None = None) -> dict[str, Any]:
    """Compare every model with the first (the baseline), record each one's verdicts against
    the baseline's run in the catalog's ``decisions`` table, and write the HTML report.

    models: label -> evaluate stage folders; run_ids: label -> run id. Returns compare_many's
    result plus ``report``, the report's path."""
    labels = list(models)
    res = compare_many(models, labels[0], n_boot=n_boot, min_snr=min_snr)
    for label in labels[1:]:
        catalog.record_decisions(run_ids[labels[0]], run_ids[label],
                                 [r for r in res["rows"] if r["model"] == label], ablation)
    path = report_decisions.write_decisions_html(title, run_ids, res["rows"], res["snr"],
                                                 report_path)
    return {**res, "report": path}


# --- compare --on: every model scored on one held-out set --------------------------------

@dataclass(frozen=True)
class HeldoutSet:
    """One held-out set to score models on, as the evaluate stage's work takes it
    (tasks/evaluate.py ``evaluate_stage``, which the ``evaluate`` and ``baseline`` stages run)."""

    label: str  # what it is, for people: "run X's held-out documents", a file's path
    identity: str  # its content: part of the scores' cache key
    data_dir: Path  # a tokenize data dir: its held-out split, and seq_len (scoring windows)
    raw_paths: list[str] | None  # documents read instead of data_dir's held-out split
    fraction: float  # the held-out share of raw_paths (1.0: every document)
    config: Any  # tasks.recipe.EvaluateConfig


def _stage_dir(stage: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """A catalog stage row's data root and manifest."""
    path = Path(stage["output_path"])
    return path.parents[2], json.loads((path / "manifest.json").read_text())


def heldout_of_run(catalog: Catalog, run: str) -> HeldoutSet:
    """A run's held-out documents, read the way its evaluate stage (and a refresh's baseline
    stage) read them, with its recipe's evaluation settings."""
    from tasks.recipe import EvaluateConfig

    shown = catalog.show(run)
    stages = {s["stage"]: s for s in shown["stages"]}
    if "tokenize" not in stages:
        raise LookupError(f"run {shown['run_id']} has no tokenize stage, so no held-out split")
    config = catalog.run_config(shown["run_id"])["stages"]
    cfg = EvaluateConfig.model_validate(config.get("evaluate") or {})
    root, tok = _stage_dir(stages["tokenize"])
    raw, identity = None, f"tokenize:{tok['version']}"
    if cfg.heldout == "raw":
        ing_root, ing = _stage_dir(stages["ingest"])
        raw, identity = [str(ing_root / p) for p in ing["outputs"]["kept"]], \
            f"{identity}+raw:{ing['version']}"
    return HeldoutSet(f"run {shown['run_id']}'s held-out documents", identity,
                      root / tok["outputs"]["data_dir"], raw,
                      float(config["tokenize"]["heldout_fraction"]), cfg)


def heldout_of_file(path: Path, like: HeldoutSet, work: Path) -> HeldoutSet:
    """A user's held-out documents (Parquet, or JSONL: one object per line with ``text``;
    ``id``, ``source`` and ``lang`` optional), scored with ``like``'s settings and windows.
    The file is copied once, by content, to ``work`` as the Parquet the scorer reads."""
    from tasks.identity import file_digest

    digest = file_digest(path)
    out = work / f"heldout-{digest[:16]}.parquet"
    if not out.is_file():
        _normalize_heldout(path, out)
    return HeldoutSet(str(path), f"file:{digest}@{like.data_dir.name}", like.data_dir,
                      [str(out)], 1.0, like.config)


HELDOUT_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.large_string()),
                            ("source", pa.string()), ("lang", pa.string())])


def _batches(path: Path, size: int = 2048) -> Iterator[list[dict[str, Any]]]:
    """Records of a Parquet or JSONL file, a batch at a time (never the whole file)."""
    if path.suffix == ".parquet":
        for b in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield b.to_pylist()
        return
    opener = gzip.open if path.suffix == ".gz" else open
    batch: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            batch.append({**rec, "_line": n})
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def _normalize_heldout(path: Path, out: Path) -> None:
    """``path`` as the held-out table (id, text, source, lang); an id that is missing is the
    record's position, a missing source the file's name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    pos, ids = 0, set()
    with pq.ParquetWriter(tmp, HELDOUT_SCHEMA) as writer:
        for batch in _batches(path):
            rows = []
            for rec in batch:
                pos += 1
                where = f"{path}:{rec.get('_line', pos)}"
                if not isinstance(rec.get("text"), str) or not rec["text"]:
                    raise ValueError(f"{where}: no text (a string) to score")
                rid = str(rec["id"]) if rec.get("id") is not None else f"{path.name}:{pos}"
                if rid in ids:  # scores are paired by id
                    raise ValueError(f"{where}: id {rid!r} repeats an earlier document's")
                ids.add(rid)
                rows.append({"id": rid, "text": rec["text"],
                             "source": str(rec.get("source") or path.name),
                             "lang": rec.get("lang") if isinstance(rec.get("lang"), str)
                             else None})
            writer.write_table(pa.Table.from_pylist(rows, HELDOUT_SCHEMA))
    if not ids:
        tmp.unlink()
        raise ValueError(f"{path}: no documents")
    os.replace(tmp, out)


def score_on(models: dict[str, list[Path]], heldout: HeldoutSet, work: Path
             ) -> dict[str, list[Path]]:
    """models: label -> train stage folders (one per seed). Scores each seed's final model on
    ``heldout`` with the evaluate stage's own work and returns label -> folders holding its
    ``items.parquet``, as compare_many takes them. Scores are kept under ``work`` by content
    (the model's train version, the held-out set, the settings): asked again, nothing is
    recomputed."""
    from tasks.evaluate import evaluate_stage
    from tasks.identity import versioned
    from tasks.stages.evaluate import Evaluate
    from tasks.store import version_of

    cfg = heldout.config
    seq_len = json.loads((heldout.data_dir / "meta.json").read_text())["seq_len"]
    out: dict[str, list[Path]] = {}
    for label, dirs in models.items():
        out[label] = []
        for train in dirs:
            ctx = json.loads((train / "checkpoint" / "config.json").read_text()).get(
                "max_position_embeddings", seq_len)
            if ctx < seq_len:
                raise ValueError(f"{label}: its model reads {ctx} tokens at most, the held-out "
                                 f"set is scored in windows of {seq_len}")
            key = version_of("compare-on", versioned(cfg), [train.name, heldout.identity],
                             code=Evaluate.code_version)
            folder = work / key
            if not (folder / "results.json").is_file():  # written last
                res = evaluate_stage(train, heldout.data_dir, heldout.raw_paths,
                                     heldout.fraction, cfg.max_docs, cfg.batch_size,
                                     cfg.tasks, cfg.max_items, cfg.seed, 0, 0,
                                     folder / "items.parquet")
                tmp = folder / f".results.json.tmp-{os.getpid()}"
                tmp.write_text(json.dumps({**res, "heldout": heldout.label}, indent=2))
                os.replace(tmp, folder / "results.json")
            out[label].append(folder)
    return out
