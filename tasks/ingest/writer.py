"""The shard writer: kept documents cut into Parquet shards by text bytes (row groups sized by
``row_group_bytes``); rejected and quarantined rows written in parts as they accumulate."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.ingest.config import SIDE_ROWS
from tasks.ingest.ids import id_hashes, write_keys
from tasks.ingest.policy import Decided
from tasks.ingest.records import doc_table, safe_text
from tasks.schema import DOC_SCHEMA, QUARANTINE_SCHEMA, with_reject
from tasks.store import replace_durably, write_parquet


def write_kept(t: pa.Table, path: Path, row_group_rows: int) -> None:
    """A kept part, atomically: zstd at level 1 (faster to write than zstd's default level,
    files the same size on the benchmark corpus), row groups of ``row_group_bytes`` of text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(t, tmp, compression="zstd", compression_level=1,
                   row_group_size=row_group_rows)
    replace_durably(tmp, path)


def _scrub(v: Any) -> Any:
    return v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v


class ShardWriter:
    """Kept documents cut into shards by text bytes; rejected and quarantined rows written in
    parts as they accumulate, so none of them is held for a whole file."""

    def __init__(self, out: Path, key: str, cfg: Any):
        self.out, self.key, self.cfg = out, key, cfg
        self.kept_files: list[str] = []
        self.pending: list[pa.Table] = []
        self.pending_keys: list[np.ndarray] = []
        self.pending_bytes = 0
        self.rejected: list[tuple[dict[str, Any], str]] = []
        self.rejected_chars = 0
        self.quarantine: list[dict[str, Any]] = []
        self.parts = {"rejected": 0, "quarantine": 0}
        self.n_kept = self.n_rejected = self.n_quarantined = 0
        self.rejections: dict[str, dict[str, int]] = {}
        self.langs: Counter[str] = Counter()

    def add(self, done: Decided) -> None:
        if done.kept is not None and len(done.kept):
            self._add_kept(done.kept, done.kept_keys)
        for row, reason in done.rejected:
            r = self.rejections.setdefault(reason, {"first": 0, "alone": 0})
            r["first"] += 1
            r["alone"] += 1
            self.rejected.append((row, reason))
            self.rejected_chars += len(row["text"])
        self.n_rejected += len(done.rejected)
        self.quarantine.extend(done.quarantine)
        self.n_quarantined += len(done.quarantine)
        if len(self.rejected) >= SIDE_ROWS or self.rejected_chars >= self.cfg.shard_max_bytes:
            self._flush_rejected()
        if len(self.quarantine) >= SIDE_ROWS:
            self._flush_quarantine()

    def _add_kept(self, t: pa.Table, keys: np.ndarray | None) -> None:
        cfg = self.cfg
        if keys is None:
            keys = id_hashes(t.column("id").to_pylist())
        self.n_kept += len(t)
        langs = pc.value_counts(pc.fill_null(t.column("lang"), "und")).to_pylist()
        self.langs.update({d["values"]: d["counts"] for d in langs})
        sizes = pc.binary_length(t.column("text").cast(pa.large_binary())).to_numpy()
        start = 0
        while start < len(t):  # cut the batch where the shard fills up
            room = cfg.shard_max_bytes - self.pending_bytes
            fill = np.cumsum(sizes[start:])
            take = max(1, int(np.searchsorted(fill, room, side="left")) + 1)
            take = min(take, len(t) - start)
            self.pending.append(t.slice(start, take))
            self.pending_keys.append(keys[start:start + take])
            self.pending_bytes += int(fill[take - 1])
            start += take
            if self.pending_bytes >= cfg.shard_max_bytes:
                self._flush_kept()

    def _flush_kept(self) -> None:
        if not self.pending:
            return
        t = pa.concat_tables(self.pending)
        avg = max(1, self.pending_bytes // max(len(t), 1))
        target = self.out / "kept" / f"part-{self.key}-{len(self.kept_files):04d}.parquet"
        write_kept(t, target, max(1, self.cfg.row_group_bytes // avg))
        write_keys(t.column("id"), self.out / "ids" / target.name,  # for ids.decide_ids
                   np.concatenate(self.pending_keys))
        self.kept_files.append(target.name)
        self.pending, self.pending_keys, self.pending_bytes = [], [], 0

    def _part(self, sub: str) -> Path:
        n = self.parts[sub]
        self.parts[sub] += 1
        return self.out / sub / f"part-{self.key}-{n:04d}.parquet"

    def _flush_rejected(self) -> None:
        if not self.rejected:
            return
        rows = {f.name: [r[f.name] for r, _ in self.rejected] for f in DOC_SCHEMA}
        try:
            t = doc_table(rows)
        except (UnicodeEncodeError, pa.ArrowInvalid):  # a lone surrogate: stored escaped
            t = doc_table({k: [_scrub(v) for v in vs] for k, vs in rows.items()})
        reasons = pa.array([why for _, why in self.rejected], pa.string())
        write_parquet(with_reject(t, "ingest", reasons), self._part("rejected"))
        self.rejected, self.rejected_chars = [], 0

    def _flush_quarantine(self) -> None:
        if not self.quarantine:
            return
        rows = [{k: safe_text(v) if isinstance(v, str) else v for k, v in r.items()}
                for r in self.quarantine]
        write_parquet(pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA),
                      self._part("quarantine"))
        self.quarantine = []

    def close(self) -> None:
        self._flush_kept()
        self._flush_rejected()
        self._flush_quarantine()
