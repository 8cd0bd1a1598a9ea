"""``html`` / ``text``: a folder of ``.html``/``.htm`` (extracted) and/or ``.txt`` files (as
is), one document per file; id is a hash of the relative path, source the folder's name."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import xxhash

from tasks.ingest.config import HTML_EXTS, TEXT_EXTS, opt
from tasks.ingest.records import Batch, ReadContext, meta_json, qrow, safe_text, snip


def walk_files(root: Path) -> Iterator[Path]:
    """Files under root in a stable order (sorted at every level), hidden entries skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _read_files(path: Path, ctx: ReadContext, exts: tuple[str, ...]) -> Iterator[Batch]:
    """A folder of pages (or one page): each .html/.htm/.txt file is one document."""
    cfg = ctx.cfg
    root = path if path.is_dir() else path.parent
    files = walk_files(path) if path.is_dir() else iter([path])
    batch = Batch()
    for i, f in enumerate(files):
        suffix = f.suffix.lower()
        if suffix not in exts:
            ctx.skipped[f"files.{suffix.lstrip('.') or 'no_extension'}"] += 1
            continue
        rel = safe_text(f.relative_to(root).as_posix())  # a name need not be UTF-8
        row = {"id": f"{ctx.source}-{xxhash.xxh64_hexdigest(rel.encode())}", "text": "",
               "source": ctx.source, "url": None, "fetched_at": None, "lang": None,
               "lang_score": None, "meta": meta_json({"path": rel})}
        try:
            st = f.stat()
            if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
                batch.quarantine.append(qrow(ctx.label, i, None, f"{rel}: not a regular file",
                                             None))
                continue
            size = st.st_size
            cap = int(opt(cfg, "max_html_bytes") if suffix in HTML_EXTS
                      else opt(cfg, "max_line_bytes"))
            if size > cap:
                reason = "ingest.html_too_large" if suffix in HTML_EXTS else "ingest.too_long"
                meta = meta_json({"path": rel, "bytes": size})
                batch.rejected.append(({**row, "meta": meta}, reason))
                continue
            with open(f, "rb") as fh:
                data = fh.read(cap + 1)
        except OSError as e:
            batch.quarantine.append(qrow(ctx.label, i, None, f"{rel}: unreadable: {e}", None))
            continue
        if suffix in HTML_EXTS:
            ctx.add_html(data, None, row, i, batch)
        else:
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as e:
                batch.quarantine.append(qrow(ctx.label, i, None, f"{rel}: invalid UTF-8: {e}",
                                             snip(data)))
                continue
            batch.add({**row, "text": text}, i)
        if batch.full():
            yield batch
            batch = Batch()
    yield batch


def read_html(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    return _read_files(path, ctx, HTML_EXTS)


def read_text(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    return _read_files(path, ctx, TEXT_EXTS)


def read_any_files(path: Path, ctx: ReadContext) -> Iterator[Batch]:
    return _read_files(path, ctx, HTML_EXTS + TEXT_EXTS)
