"""Content-addressed stage outputs (like Marin's executor steps).

A stage's output lives at ``<data_root>/stages/<stage>/<version>/`` where ``version`` hashes the
stage's config, its inputs' versions and the stage code's version. Same config + same inputs =>
same folder => nothing recomputed. ``manifest.json`` is written last, atomically: a folder
without it is unfinished. Inside, per-shard markers under ``_shards/`` let a re-run after a crash
redo only unfinished shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def version_of(stage: str, config: Any, inputs: Iterable[str], code: int | None = None) -> str:
    """The content address of a stage execution: its name, code version (the stage class's
    ``code_version``), versioned config (tasks/identity.py) and input versions."""
    if code is None:
        from tasks.stages import code_version

        code = code_version(stage)
    payload = {"stage": stage, "code": code, "config": config, "inputs": list(inputs)}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (not possible on every platform: then skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: Path, path: Path) -> None:
    """fsync the written temporary file, rename it over ``path``, fsync the folder: after a
    power loss a marker or manifest never names data that did not reach the disk."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    replace_durably(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def write_parquet(table: pa.Table, path: Path, row_group_rows: int | None = None) -> None:
    """Write one Parquet file atomically (zstd; row groups sized by the caller)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    pq.write_table(
        table, tmp, compression="zstd", row_group_size=row_group_rows or max(len(table), 1)
    )
    replace_durably(tmp, path)


@dataclass(frozen=True)
class StageDir:
    data_root: Path
    stage: str
    version: str

    @property
    def path(self) -> Path:
        return self.data_root / "stages" / self.stage / self.version

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def done(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def rel(self, p: Path | str) -> str:
        """Path relative to the data root, as stored in manifests (the root can move)."""
        return str(Path(p).resolve().relative_to(self.data_root.resolve()))

    def part(self, kind: str, key: str) -> str:
        """Where shard ``key`` of output ``kind`` (kept, rejected, scored, ...) goes."""
        return str(self.path / kind / f"part-{key}.parquet")

    # per-shard markers: the shard's stats, written after its files are in place
    def shard_marker(self, key: str) -> Path:
        return self.path / "_shards" / f"{key}.json"

    def shard_done(self, key: str) -> dict[str, Any] | None:
        m = self.shard_marker(key)
        return json.loads(m.read_text()) if m.is_file() else None

    def mark_shard(self, key: str, stats: dict[str, Any]) -> None:
        atomic_write_json(self.shard_marker(key), stats)

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        manifest = {
            "stage": self.stage,
            "version": self.version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **manifest,
        }
        atomic_write_json(self.manifest_path, manifest)
        return manifest


def shard_key(path: str) -> str:
    """``.../part-00003.parquet`` -> ``00003``: a shard keeps its key through the stages."""
    return Path(path).name.removeprefix("part-").removesuffix(".parquet")


def merge_counts(stats: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum docs_in/kept/rejected and per-rule counts over shard stats."""
    out: dict[str, Any] = {"docs_in": 0, "docs_kept": 0, "docs_rejected": 0, "rejections": {}}
    for s in stats:
        for k in ("docs_in", "docs_kept", "docs_rejected"):
            out[k] += int(s.get(k, 0))
        for rule, c in s.get("rejections", {}).items():
            r = out["rejections"].setdefault(rule, {"first": 0, "alone": 0})
            r["first"] += int(c.get("first", 0))
            r["alone"] += int(c.get("alone", 0))
        for name, v in s.get("edits", {}).items():  # what edit steps changed (lines, PII)
            edits = out.setdefault("edits", {})
            edits[name] = edits.get(name, 0) + int(v)
    return out


def run_marked(marker: str, fn: Any, *args: Any) -> dict[str, Any]:
    """Run one shard's work and then write its marker (on whichever worker runs it), so a
    re-run after a crash skips exactly the shards that finished. The marker also keeps the
    shard's profile (wall and CPU time, bytes read and written: tasks/profile.py)."""
    from tasks.profile import measured

    stats, profile = measured(fn, *args)
    if isinstance(stats, dict):
        stats = {**stats, "profile": profile}
    atomic_write_json(Path(marker), stats)
    return stats


def file_sha256(path: Path) -> str:
    """Content hash of a file, streamed (the one helper: tasks.identity.file_digest)."""
    from tasks.identity import file_digest

    return file_digest(path)
