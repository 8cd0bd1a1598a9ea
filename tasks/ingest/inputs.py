"""Input discovery: globs -> inputs (files, page folders, Hugging Face dataset directories),
their fingerprints and content hashes (for incremental runs), and format detection."""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from pathlib import Path
from typing import Any

from tasks.ingest.config import HTML_EXTS, TEXT_EXTS
from tasks.ingest.readers import AUTO_ONLY, READERS
from tasks.ingest.readers.files import walk_files
from tasks.ingest.records import safe_text
from tasks.store import file_sha256

FORMATS = ("auto", *(k for k in READERS if k not in AUTO_ONLY))
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class InputError(ValueError):
    """The input names nothing readable (missing path, empty glob)."""


def _is_hf_dir(d: Path) -> bool:
    return any((d / m).is_file() for m in HF_MARKERS)


def _match_parts(pat: list[str], parts: list[str]) -> bool:
    """Whether path components `parts` match glob components `pat` as ``glob`` would: ``**``
    is zero or more components, a wildcard matches no hidden name unless it starts with '.'."""
    if not pat:
        return not parts
    head, rest = pat[0], pat[1:]
    if head == "**":
        for k in range(len(parts) + 1):
            if _match_parts(rest, parts[k:]):
                return True
            if k < len(parts) and parts[k].startswith("."):
                return False
        return False
    if not parts:
        return False
    name = parts[0]
    if glob.has_magic(head) and name.startswith(".") and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, head) and _match_parts(rest, parts[1:])


def rglob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, but every real directory is visited once: ``**``
    through a symlink to a parent folder ends (glob follows it forever). A directory reached
    by two paths is found by the first in walk order (inputs are deduplicated by real path
    anyway)."""
    comps = pattern.split(os.sep)
    k = next(i for i, c in enumerate(comps) if glob.has_magic(c))
    root = os.sep if comps[:k] == [""] else os.sep.join(comps[:k])  # "" for the cwd
    tail = comps[k:]
    top = root or os.curdir
    if not os.path.isdir(top):
        return []
    found = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames.sort()
        rel = os.path.relpath(dirpath, top)
        base = [] if rel == os.curdir else rel.split(os.sep)
        for name in [None, *dirnames, *filenames]:
            parts = base if name is None else [*base, name]
            if (parts or root) and _match_parts(tail, parts):  # glob omits a bare ""
                found.append(os.path.join(root, *parts) if parts else root)
    return sorted(set(found))


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Expand globs in order; each pattern must match at least one input.

    An input is a file, or a directory that is a dataset: a Hugging Face ``save_to_disk``
    directory (matched by any pattern), or a folder of pages that a pattern names without
    wildcards. Files inside an input directory are not inputs of their own.
    """
    found: list[Path] = []
    for pattern in patterns:
        if "://" in pattern and not pattern.startswith("file://"):  # object storage
            from tasks.ingest.fetch import fetch_inputs

            fetched = fetch_inputs(pattern)
            if not fetched:
                raise InputError(f"input glob matched no objects: {pattern!r}")
            found.extend(fetched)
            continue
        expanded = os.path.expanduser(pattern.removeprefix("file://"))
        literal = not glob.has_magic(expanded)
        recursive = "**" in expanded.split(os.sep)
        matches = rglob(expanded) if recursive else sorted(glob.glob(expanded))
        picked = [Path(m) for m in matches if os.path.isfile(m) or (
            os.path.isdir(m) and (literal or _is_hf_dir(Path(m))))]
        if not picked:
            raise InputError(f"input glob matched no files: {pattern!r}")
        found.extend(picked)
    dirs = [f.resolve() for f in found if f.is_dir()]
    seen: set[Path] = set()
    out = []
    for f in found:
        r = f.resolve()
        if r in seen or any(d != r and d in r.parents for d in dirs):
            continue
        seen.add(r)
        out.append(f)
    return out


def fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and mtime; for a directory, the total size of its files and the newest mtime
    of any entry (a renamed, added or removed file changes its directory's mtime)."""
    from tasks.ingest.fetch import url_of

    st = path.stat()
    # printable and storable, for manifest and catalog; a fetched object by its URL
    shown = safe_text(url_of(path) or str(path.resolve()))
    if not path.is_dir():
        return {"path": shown, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    size, mtime, n = 0, st.st_mtime_ns, 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for d in dirnames:
            mtime = max(mtime, os.stat(os.path.join(dirpath, d)).st_mtime_ns)
        for name in filenames:
            fst = os.stat(os.path.join(dirpath, name))
            size, mtime, n = size + fst.st_size, max(mtime, fst.st_mtime_ns), n + 1
    return {"path": shown, "size": size, "mtime_ns": mtime, "n_files": n}


def content_sha256(path: Path) -> str:
    """Content hash of an input: the file's SHA-256; for a directory, a SHA-256 over its files'
    relative paths and SHA-256s (hidden entries skipped, as the readers skip them)."""
    if not path.is_dir():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in walk_files(path):
        h.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def detect_format(path: Path, fmt: str) -> str:
    """The reader for `path`: `fmt` itself, or for ``auto`` by extension / folder contents."""
    if fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}; known: {list(FORMATS)}")
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf" if _is_hf_dir(path) else "files"
    name = path.name.lower()
    for comp in ("", ".gz", ".zst", ".zstd"):
        if name.endswith(tuple(e + comp for e in (".jsonl", ".json", ".ndjson"))):
            return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".wet", ".wet.gz")):
        return "wet"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith(".arrow"):
        return "hf"
    if name.endswith(HTML_EXTS):
        return "html"
    if name.endswith(TEXT_EXTS):
        return "text"
    raise InputError(f"cannot tell the format of {path} (set input.format)")
