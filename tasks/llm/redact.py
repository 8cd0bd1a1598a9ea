"""Error messages without secrets: every URL in them loses its credentials (``user:pass@``),
query string and fragment. An error from the LLM client ends up in logs and in the catalog's
``runs.error``, and a base URL may carry a key (``https://user:key@host/v1``, ``?api_key=``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

# scheme://[userinfo@]host/path[?query][#fragment]; a URL ends at whitespace, a quote or <>
_END = "\\s\"'<>"
_URL = re.compile(rf"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^{_END}/?#@]*@)?"
                  rf"(?P<rest>[^{_END}?#]*)(?P<query>\?[^{_END}#]*)?(?P<fragment>#[^{_END}]*)?")


def scrub_urls(text: str) -> str:
    """``text`` with ``user:pass@`` and any ``?query``/``#fragment`` of each URL masked."""
    def one(m: re.Match[str]) -> str:
        return (m["scheme"] + ("***@" if m["userinfo"] else "") + m["rest"]
                + ("?***" if m["query"] or m["fragment"] else ""))

    return _URL.sub(one, text)


def _scrub_args(e: BaseException) -> None:
    e.args = tuple(scrub_urls(a) if isinstance(a, str) else a for a in e.args)


@contextmanager
def scrubbed_errors() -> Iterator[None]:
    """Re-raise any exception with the URLs in its message, and in its causes', scrubbed: the
    same exception (callers' ``except`` clauses still match) where its message lives in
    ``args``, else a RuntimeError carrying the scrubbed message."""
    try:
        yield
    except Exception as e:
        seen: set[int] = set()
        x: BaseException | None = e
        while x is not None and id(x) not in seen:  # the chain a traceback prints
            seen.add(id(x))
            _scrub_args(x)
            x = x.__cause__ or x.__context__
        msg = str(e)
        if scrub_urls(msg) == msg:
            raise
        raise RuntimeError(f"{type(e).__name__}: {scrub_urls(msg)}") from None
