"""``python -m serve``: ``mt serve`` plus every limit and batching knob as a flag."""

from __future__ import annotations

import argparse
import sys

from serve.cli import serve_cli
from serve.settings import add_arguments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve", description="HTTP translation server")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR", help="model dir (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require this key (or set MT_API_KEY)")
    add_arguments(p)
    return serve_cli(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
