"""An export folder's life: its content address, its lock, its temporary sibling, its manifest.

An export is addressed by what it is made of: the run, the format, the options that change its
bytes and the versions of the stage outputs it reads (plus this code's version). The folder's
``export.json`` holds that hash; exporting again to a folder whose manifest has the same hash
and whose files are all there does nothing. Files are written to a temporary sibling
(``.<name>.export-tmp``) and the folder is swapped in by renames at the end, ``export.json``
written last inside it: a killed export leaves only the sibling (removed by the next export to
that place), never a folder that looks complete. One export at a time per folder (``flock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.export.source import ExportError
from tasks.store import atomic_write_json, fsync_dir, fsync_file

CODE_VERSION = 1  # bump when an exporter changes what it writes
MANIFEST = "export.json"


def export_hash(run_id: str, fmt: str, options: dict[str, Any], inputs: dict[str, str]) -> str:
    payload = {"code": CODE_VERSION, "run_id": run_id, "format": fmt, "options": options,
               "inputs": inputs}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sibling(final: Path, what: str) -> Path:
    return final.parent / f".{final.name}.export-{what}"


@contextmanager
def export_lock(final: Path) -> Iterator[None]:
    """Exclusive while an export writes to ``final`` (the kernel drops it if the holder
    dies), so its temporary siblings can be cleared without racing another writer."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(_sibling(final, "lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_manifest(final: Path) -> dict[str, Any] | None:
    path = final / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def up_to_date(final: Path, digest: str) -> dict[str, Any] | None:
    """The folder's manifest if it holds this export complete (same hash, every file there
    with its size), else None."""
    m = read_manifest(final)
    if m is None or m.get("hash") != digest:
        return None
    for f in m.get("files", []):
        p = final / f["path"]
        if not p.is_file() or p.stat().st_size != f["bytes"]:
            return None
    return m


def check_target(final: Path) -> None:
    """Refuse to replace something that is not an export: a file, or a non-empty folder
    without ``export.json``."""
    if final.exists() and not final.is_dir():
        raise ExportError(f"{final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and read_manifest(final) is None:
        raise ExportError(f"{final} is a non-empty folder without {MANIFEST}: not replacing "
                          "something that is not an export (choose an empty or new folder)")


def begin(final: Path) -> Path:
    """A fresh temporary sibling to write into (a killed export's leftovers removed)."""
    for what in ("tmp", "old"):
        shutil.rmtree(_sibling(final, what), ignore_errors=True)
    tmp = _sibling(final, "tmp")
    tmp.mkdir(parents=True)
    return tmp


def listing(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` but the manifest: relative path and size, sorted."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out.append({"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size})
    return out


def commit(tmp: Path, final: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Files made durable, ``export.json`` written last, then the folder swapped in."""
    files = listing(tmp)
    for f in files:
        fsync_file(tmp / f["path"])
    manifest = {**manifest, "files": files,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(tmp / MANIFEST, manifest)
    fsync_dir(tmp)
    old = _sibling(final, "old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return manifest
