"""An OTLP/HTTP endpoint that accepts and discards, for `throughput.py --trace`.

Usage: .venv/bin/python benchmarks/otlp_sink.py PORT

It answers every POST as a collector does (200, an empty protobuf body) and prints how many
requests and bytes it took when stopped (SIGTERM), so tracing's cost on the services is
measured without a real backend's CPU in the way.
"""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

taken = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    """Read the body, count it, answer 200."""

    def do_POST(self) -> None:
        """Take one export request."""
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        taken["requests"] += 1
        taken["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's signature
        """Quiet."""


def main() -> None:
    """Serve until SIGTERM, then print what was taken."""
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        print(taken, flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
