"""URL blocklist: reject documents whose URL's host is on a list the user supplies.

The list is a text file, one domain per line (``#`` starts a comment; a line may also be a full
URL, whose host is taken), in the format of the UT1 blacklists FineWeb's URL filter uses. A
document is blocked when its host, or any parent domain of it, is listed: ``ads.example.com``
is blocked by ``example.com``. Hosts are compared lowercased, without a leading ``www.`` and
without a port. Matching is vectorised (Arrow ``is_in`` per domain level). Documents without a
URL are not judged (null).

Score column: ``url_blocklist_blocked`` (bool). Rule: ``url_blocklist.blocked``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tasks.filters import text as tx
from tasks.filters.base import FilterConfig, existing_file
from tasks.identity import BY_CONTENT, SCORED

NAME = "url_blocklist"
SCORE_VERSION = 1
MAX_LEVELS = 8  # a.b.c.d.e.f.g.h: deeper hosts are checked on their last 8 labels' suffixes

_HOST = r"^(?:[A-Za-z][A-Za-z0-9+.\-]*://)?(?:[^@/?#]*@)?(?P<host>[^:/?#\s]+)"


class Config(FilterConfig):
    path: Annotated[str, SCORED, BY_CONTENT, existing_file(NAME)] = Field(
        description="text file of blocked domains, one per line (score)")


def normalize_host(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    host = pc.struct_field(pc.extract_regex(col, _HOST), "host")
    host = pc.utf8_lower(host)
    host = pc.replace_substring_regex(host, r"^www\.", "")
    return pc.replace_substring_regex(host, r"\.$", "")


@functools.lru_cache(maxsize=8)
def load_domains(path: str, mtime_ns: int) -> pa.Array:
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    entries = [x.split("#", 1)[0].strip() for x in lines]
    entries = [x for x in entries if x]
    hosts = normalize_host(pa.array(entries, pa.string())) if entries else pa.array([], pa.string())
    return pc.unique(pc.drop_null(hosts))


def score(table: pa.Table, config: FilterConfig) -> pa.Table:
    if not isinstance(config, Config):
        raise TypeError(f"{NAME}.score needs a {__name__}.Config, got {type(config).__name__}")
    n = table.num_rows
    if "url" not in table.column_names:
        blocked = pa.nulls(n, pa.bool_())
    else:
        domains = load_domains(config.path, Path(config.path).stat().st_mtime_ns)
        host = normalize_host(table.column("url"))
        blocked = pc.is_in(host, value_set=domains)
        for _ in range(MAX_LEVELS - 1):  # strip one label at a time: a.b.com -> b.com
            host = pc.if_else(pc.match_substring(host, "."),
                              pc.replace_substring_regex(host, r"^[^.]*\.", "", max_replacements=1),
                              pa.scalar(None, pa.string()))
            blocked = pc.or_(blocked, pc.fill_null(pc.is_in(host, value_set=domains), False))
        # no URL (or no host in it): not judged
        blocked = pc.if_else(pc.is_null(normalize_host(table.column("url"))),
                             pa.scalar(None, pa.bool_()), blocked)
    if isinstance(blocked, pa.ChunkedArray):
        blocked = blocked.combine_chunks()
    return pa.table({f"{NAME}_blocked": blocked})


def rules(scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]:
    return {f"{NAME}.blocked": tx.column(scores, f"{NAME}_blocked")}
