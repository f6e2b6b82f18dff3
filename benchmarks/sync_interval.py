"""What `sync_interval: always` costs: JetStream publish throughput, fsync on every write.

Compared with the server default (fsync every 2 minutes), measured in the same run. Also what
one run checkpoint costs: a compare-and-set KV update of `--checkpoint` bytes, one at a time,
as an agent writes one per step (the milliseconds a step waits for it, with either setting).

Usage: .venv/bin/python benchmarks/sync_interval.py [--messages N] [--size BYTES]
Prints one JSON object; `ratio` is always/default for messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from hivebus.core.embedded import free_port, nats_server_binary


async def wait_ready(port: int) -> None:
    """Wait until the server accepts TCP connections."""
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return
    raise RuntimeError("nats-server did not start")


async def measure(
    *, sync_always: bool, messages: int, size: int, checkpoint: int
) -> tuple[float, float]:
    """Acknowledged publishes per second and ms per checkpoint write, on a fresh server."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        sync = "  sync_interval: always\n" if sync_always else ""
        conf = Path(tmp) / "nats.conf"
        conf.write_text(
            f'listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: "{tmp}/js"\n{sync}}}\n',
            encoding="utf-8",
        )
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server runs alongside
            [str(nats_server_binary()), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"nats://127.0.0.1:{port}"
            await wait_ready(port)
            nc = await nats.connect(url)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="B", subjects=["b.>"], storage=StorageType.FILE))
            payload = b"x" * size
            start = time.perf_counter()
            for i in range(messages):  # one at a time: each publish waits for its ack
                await js.publish(f"b.{i % 10}", payload)
            elapsed = time.perf_counter() - start
            kv = await js.create_key_value(KeyValueConfig(bucket="runs", history=1))
            state = b"c" * checkpoint
            revision = await kv.create("t.s.1", state)
            start = time.perf_counter()
            for _ in range(messages):  # as a run's steps do: each waits for the one before
                revision = await kv.update("t.s.1", state, last=revision)
            per_checkpoint_ms = (time.perf_counter() - start) / messages * 1000
            await nc.close()
            return messages / elapsed, per_checkpoint_ms
        finally:
            proc.terminate()
            proc.wait()


async def main() -> None:
    """Measure both settings and print the comparison as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--checkpoint", type=int, default=4096, help="checkpoint bytes")
    args = parser.parse_args()
    sizes = {"messages": args.messages, "size": args.size, "checkpoint": args.checkpoint}
    default, default_cp = await measure(sync_always=False, **sizes)
    always, always_cp = await measure(sync_always=True, **sizes)
    print(
        json.dumps(
            {
                "benchmark": "jetstream_publish_sync_interval",
                "messages": args.messages,
                "size_bytes": args.size,
                "default_msgs_per_s": round(default, 1),
                "always_msgs_per_s": round(always, 1),
                "ratio": round(always / default, 3),
                "checkpoint_bytes": args.checkpoint,
                "checkpoint_write_ms": {
                    "default": round(default_cp, 3),
                    "always": round(always_cp, 3),
                },
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
