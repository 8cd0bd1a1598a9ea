"""What every LLM backend takes and returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Request:
    key: str  # the generation cache key
    messages: list[dict[str, str]] | None = None  # /v1/chat/completions
    prompt: str | None = None  # /v1/completions


@dataclass
class Result:
    key: str
    output: str | None  # None: failed (``error`` says why)
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str = ""
    seconds: float = 0.0
    error: str | None = None
    # failed for a reason that may pass (5xx, connection, timeout, after every retry): the
    # document is rejected for this run only, nothing is cached, the next run asks again
    transient: bool = False


@dataclass
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 1024
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def as_key(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_tokens": self.max_tokens, "seed": self.seed, "stop": list(self.stop)}


def storable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it encodes as UTF-8 (the
    cache's JSON lines, Parquet). A JSON answer can hold one (``"\\ud800"``), which Python
    decodes into a str that no UTF-8 writer accepts; a pair sent as two escapes is joined."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Backend(Protocol):
    name: str
    model: str

    def run(self, requests: Iterable[Request], on_result: Callable[[Result], None]) -> None:
        """Send every request; call ``on_result`` (in the caller's thread) as each finishes."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
