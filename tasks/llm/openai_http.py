"""OpenAI-compatible HTTP backend (vLLM, llama.cpp's server, Ollama, SGLang, TGI all serve it).

Threads, not asyncio: a request is mostly waiting on the server, ``max_concurrency`` threads
keep that many requests in flight, and each answer is handed back to the caller (who stores it)
the moment it arrives. Retryable failures (429, 5xx, connection errors, timeouts) are retried
with exponential backoff and full jitter; a circuit breaker pauses everyone during an outage;
one still failing after every retry is a *transient* result (retried by the next run, never
cached). The API key is read at the last moment and only ever put in the Authorization header;
errors leave with their URLs scrubbed (``tasks.llm.redact``).
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasks.llm.base import Request, Result, Sampling
from tasks.llm.redact import scrub_urls, scrubbed_errors
from tasks.llm.retry import Backoff, CircuitBreaker

# retried within a run; still failing after every retry: transient (the next run asks again).
# Any other 4xx is the server's final word on the request (e.g. 400: prompt too long).
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
# The server says the setup is wrong (bad key, no such model or path): no document would fare
# better, so the stage fails with a clear error instead of rejecting every document.
CONFIG_STATUS = {401, 403, 404, 405}


class BackendConfigError(RuntimeError):
    """The server refused the configuration (URL, model or key), not a document."""


class HTTPBackend:
    name = "openai"

    def __init__(self, base_url: str, model: str, sampling: Sampling, api: str = "chat",
                 api_key: str | None = None, max_concurrency: int = 8,
                 timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 max_retries: int = 8, backoff: Backoff | None = None,
                 breaker: CircuitBreaker | None = None, seed: int = 0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.sampling = sampling
        self.api = api
        self._api_key = api_key  # never logged, never returned by stats()
        self.max_concurrency = max_concurrency
        self.timeout = (connect_timeout_s, timeout_s)
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[Any] = []
        self.requests = 0  # HTTP attempts, retries included
        self.retries = 0
        self.failed = 0

    def __repr__(self) -> str:  # no key in reprs, tracebacks or logs
        return f"HTTPBackend({scrub_urls(self.base_url)!r}, model={self.model!r}, " \
               f"api={self.api!r})"

    # --- one request ---
    def _client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            import httpx

            headers = {"Content-Type": "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            c = httpx.Client(headers=headers, timeout=httpx.Timeout(
                self.timeout[1], connect=self.timeout[0]))
            self._local.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def body(self, req: Request) -> dict[str, Any]:
        s = self.sampling
        b: dict[str, Any] = {"model": self.model, "temperature": s.temperature, "top_p": s.top_p,
                             "max_tokens": s.max_tokens}
        if s.seed is not None:
            b["seed"] = s.seed
        if s.stop:
            b["stop"] = list(s.stop)
        if self.api == "chat":
            b["messages"] = req.messages
        else:
            b["prompt"] = req.prompt
        return b

    def url(self) -> str:
        return self.base_url + ("/chat/completions" if self.api == "chat" else "/completions")

    def call(self, req: Request) -> Result:
        import httpx

        body, url = self.body(req), self.url()
        attempt = 0
        while True:
            self.breaker.before_request()
            t0 = time.perf_counter()
            with self._lock:
                self.requests += 1
            retry_after = 0.0
            try:
                r = self._client().post(url, json=body)
                status = r.status_code
            except (httpx.TransportError, httpx.TimeoutException):
                status = 0  # connection refused/reset, timeout: retryable
            if status == 200:
                try:
                    res = self._parse(req.key, r.json(), time.perf_counter() - t0)
                except (ValueError, KeyError, IndexError, TypeError):
                    status = 502  # a garbled answer: treat as a server error, retry
                else:
                    self.breaker.record_success()
                    return res
            if status in CONFIG_STATUS:
                raise BackendConfigError(scrub_urls(
                    f"{url} answered {status} for model {self.model!r}: check rewrite.base_url, "
                    f"rewrite.model and the API key ({r.text[:200]!r})"))
            if status and status not in RETRYABLE_STATUS and status < 500:
                # the server is up and said no to this request (e.g. 400: prompt too long)
                self.breaker.release_probe()
                with self._lock:
                    self.failed += 1
                return Result(req.key, None, error=f"http_{status}")
            if status == 429:
                retry_after = _retry_after(r.headers.get("retry-after"))
            self.breaker.record_failure()
            attempt += 1
            if attempt > self.max_retries and self.breaker.healthy:
                # others get answers, this one keeps failing: give up on it, not the run
                with self._lock:
                    self.failed += 1
                return Result(req.key, None, error=f"http_{status}" if status else "connection",
                              transient=True)
            with self._lock:
                self.retries += 1
                d = self.backoff.delay(min(attempt, 16), self._rng)
            time.sleep(max(d, retry_after))

    def _parse(self, key: str, js: dict[str, Any], seconds: float) -> Result:
        ch = js["choices"][0]
        text = ch["message"]["content"] if self.api == "chat" else ch["text"]
        usage = js.get("usage") or {}
        return Result(key, text or "", int(usage.get("prompt_tokens", 0)),
                      int(usage.get("completion_tokens", 0)), str(ch.get("finish_reason") or ""),
                      seconds)

    # --- many requests ---
    def run(self, requests: Iterable[Request], on_result: Callable[[Result], None]) -> None:
        """At most ``max_concurrency`` in flight; results handed to ``on_result`` in this thread
        as they arrive (the caller stores them: a kill loses only what is in flight)."""
        done: queue.Queue[tuple[Result | None, BaseException | None]] = queue.Queue()
        slots = threading.Semaphore(self.max_concurrency)
        in_flight = 0

        def work(req: Request) -> None:
            try:
                done.put((self.call(req), None))
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                done.put((None, e))
            finally:
                slots.release()

        def drain(block: bool) -> int:
            n = 0
            while True:
                try:
                    res, err = done.get(block=block and n == 0, timeout=None)
                except queue.Empty:
                    return n
                if err is not None:
                    raise err
                assert res is not None
                on_result(res)
                n += 1

        with scrubbed_errors(), ThreadPoolExecutor(max_workers=self.max_concurrency,
                                                   thread_name_prefix="llm") as pool:
            try:
                for req in requests:
                    while not slots.acquire(timeout=0.05):
                        in_flight -= drain(block=False)
                    pool.submit(work, req)
                    in_flight += 1
                    in_flight -= drain(block=False)
                while in_flight:
                    in_flight -= drain(block=True)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "retries": self.retries, "failed": self.failed,
                "breaker_opened": self.breaker.opened_count,
                "paused_s": round(self.breaker.paused_s, 3)}

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()


def _retry_after(v: str | None) -> float:
    try:
        return min(float(v), 120.0) if v else 0.0
    except ValueError:
        return 0.0
