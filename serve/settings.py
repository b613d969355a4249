"""Server limits and batching knobs, in one place so the CLI, the app and the tests agree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional



@dataclass(frozen=True)
class ServerSettings:
    """Everything configurable about the server (the models are passed separately).

    Request limits bound the work a single request can cause; they are also written into the
    OpenAPI schema, so clients see them. ``max_tokens_per_text`` must stay below the model's
    ``max_positions`` (checked per model at startup).
    """

    # ---- request limits
    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text
    max_tokens_per_text: int = 256  # SentencePiece tokens per text (before the appended EOS)
    max_body_bytes: int = 256 * 1024  # whole request body, checked on Content-Length and streamed
    max_beam: int = 16
    max_output_length: int = 512
    request_timeout_s: float = 30.0  # per request, queueing included -> 504

    # ---- micro-batching
    max_batch_tokens: int = 2048  # source tokens merged into one batched search
    max_wait_ms: float = 5.0  # how long the first queued request waits for company
    max_queue: int = 1024  # queued requests before new ones get 503
    # decoding: `workers` threads take batches from the queue at once (None: 2 on a CPU with
    # at least 2 threads, else 1) and share `threads` torch threads (None: torch's default,
    # the number of cores), `threads // workers` each. Two workers overlap one batch's Python
    # bookkeeping with the other's matrix products (serve/batcher.py).
    workers: Optional[int] = None
    threads: Optional[int] = None
    # 1: `mt serve` runs each worker in its own process (own GIL; serve/processes.py);
    # 0: threads inside the server process (always so for create_app without a `decode`)
    worker_processes: int = 1
    # Python's GIL switch interval while `mt serve` runs (process-wide; Python's default is 5).
    # With worker threads the event loop needs the GIL to answer and admit requests while two
    # workers run beam-search bookkeeping; at 1 ms, C=32 throughput was 13% higher on the 2-core
    # reference VM (measured with threads, before worker processes became the default).
    switch_interval_ms: float = 1.0

    # ---- decoding: DecodeOptions fields given to `mt serve` (--beam, --alpha, --dtype,
    # --int8, --shortlist, --no-pack ...). Each model decodes with the defaults stored in its
    # directory with these on top; a request may override beam, alpha, n_best, max length.
    decode: dict[str, Any] = field(default_factory=dict)

    # ---- access
    api_key: Optional[str] = None  # None = open; else required on every route but /health, /ready

    def replace(self, **changes) -> "ServerSettings":
        return dataclasses.replace(self, **changes)


    def validate(self) -> None:
        """Raise ``ValueError`` naming the first nonsensical setting."""
        for name in ("max_texts", "max_chars", "max_tokens_per_text", "max_body_bytes", "max_beam",
                     "max_output_length", "max_batch_tokens", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"settings.{name}: must be >= 1, got {getattr(self, name)}")
        beam = self.decode.get("beam")
        if beam is not None and beam > self.max_beam:
            raise ValueError(f"--beam: {beam} exceeds --max-beam={self.max_beam}")
        if self.request_timeout_s <= 0 or self.max_wait_ms < 0:
            raise ValueError("settings.request_timeout_s must be > 0 and max_wait_ms >= 0")
        if self.worker_processes not in (0, 1):
            raise ValueError(f"settings.worker_processes: must be 0 or 1, got {self.worker_processes}")
        if not 0.01 <= self.switch_interval_ms <= 100:
            raise ValueError(f"settings.switch_interval_ms: must be in [0.01, 100], got {self.switch_interval_ms}")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"settings.{name}: must be >= 1, got {value}")
        from mt.decode.options import check

        check(self.decode)
        if self.api_key is not None and not self.api_key:
            raise ValueError("settings.api_key: must not be empty (use None for no key)")


def add_arguments(parser) -> None:
    """Add the decoding flags (:func:`mt.decode.options.add_arguments`, stored in
    ``decode``) and ``--max-texts`` … ``--switch-interval-ms`` (one per field but ``api_key``)
    to an argparse parser; ``serve.cli.settings_from_args`` reads them back. Defaults stay
    None, meaning "the ServerSettings default"."""
    from mt.decode.options import add_arguments as add_decode_arguments

    add_decode_arguments(parser, ("search", "model"))
    group = parser.add_argument_group("server limits and batching")
    for f in dataclasses.fields(ServerSettings):
        if f.name in ("api_key", "decode"):
            continue
        kind = float if isinstance(f.default, float) else int  # workers, threads: None -> int
        group.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None, metavar=kind.__name__.upper(),
            help=f"(default {'auto' if f.default is None else f.default})",
        )
