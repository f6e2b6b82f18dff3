"""A 3-node nats-server cluster on loopback, from the configuration hivebus ships.

`Cluster` starts, kills, restarts, pauses (SIGSTOP) and resumes its nodes, each on ports
chosen where no outgoing connection can take them while it is down; `cluster_convergence`
tells when it is whole again.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
from pathlib import Path

import nats
from chaos_bus import wait_for

from hivebus.console.stack import provision_all
from hivebus.core import Settings
from hivebus.core.embedded import nats_server_binary

SHIPPED_CLUSTER = Path(__file__).resolve().parents[2] / "infra" / "nats" / "cluster"
"""The 3-node cluster configuration hivebus ships (for docker-compose and real hosts)."""
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where Linux says which ports it gives to outgoing connections (and to binds on port 0)."""
LOWEST_PORT = 10_000


def quiet_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports below the range Linux gives outgoing connections.

    A killed node's ports stay free until it restarts: in that range, any of the many
    connections made meanwhile (clients reconnecting, routes, monitoring requests) could be
    given one as its local port, and the node could not listen on it again.
    """
    start = int(EPHEMERAL_RANGE.read_text().split()[0]) if EPHEMERAL_RANGE.exists() else 32768
    chosen = random.SystemRandom()
    held: list[socket.socket] = []
    try:
        for _ in range(count * 50):  # a bound: nearly every port there is free
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", chosen.randrange(LOWEST_PORT, start)))
            except OSError:
                sock.close()
                continue
            held.append(sock)  # held until all are chosen: no port is chosen twice
        if len(held) < count:
            raise RuntimeError(f"found only {len(held)} free ports of {count}")
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def localize(text: str, ports: dict[str, tuple[int, int, int]], name: str, store: Path) -> str:
    """A shipped node configuration made runnable on loopback.

    `ports` maps each node name (`nats-1`...) to its (client, cluster, http) ports; `name`
    is this node. The store goes to `store` and routes to the other nodes' loopback ports.
    The shipped `include` of the identities is dropped (an open server; `Cluster` can give
    them). Raises ValueError when the shipped file no longer has a line this relies on.
    """
    client, cluster, http = ports[name]
    replacements = [
        (r'(?m)^include "\.\./auth\.conf"$', ""),  # the identities: `Cluster(include=...)`
        (r"(?m)^listen: 0\.0\.0\.0:4222$", f"listen: 127.0.0.1:{client}"),
        (r"(?m)^http: 0\.0\.0\.0:8222$", f"http: 127.0.0.1:{http}"),
        (r"store_dir: /data/jetstream", f'store_dir: "{store.as_posix()}"'),
        (r"(?m)^(\s+)listen: 0\.0\.0\.0:6222$", rf"\g<1>listen: 127.0.0.1:{cluster}"),
    ]
    for pattern, value in replacements:
        text, found = re.subn(pattern, value, text)
        if found != 1:
            raise ValueError(f"shipped config has no single line matching {pattern!r}")
    text, routes = re.subn(
        r"nats-route://(nats-\d+):6222",
        lambda m: f"nats-route://127.0.0.1:{ports[m[1]][1]}",
        text,
    )
    if routes != len(ports) - 1:
        raise ValueError(f"expected {len(ports) - 1} routes, found {routes}")
    return text


class Cluster:
    """Three nats-servers on loopback from the shipped cluster configuration, each with a store."""

    NAMES = ("nats-1", "nats-2", "nats-3")

    def __init__(
        self, directory: Path, include: str = "", credentials: dict[str, str] | None = None
    ) -> None:
        """Pick free ports and write the localized configurations under `directory`.

        `include` is configuration text appended to every node's (accounts and users, say);
        `credentials` are the `nats.connect` arguments the readiness check connects with.
        """
        self.directory = directory
        self.credentials = credentials or {}
        ports = iter(quiet_ports(3 * len(self.NAMES)))
        self.ports = {n: (next(ports), next(ports), next(ports)) for n in self.NAMES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name in self.NAMES:
            shipped = (SHIPPED_CLUSTER / f"{name}.conf").read_text(encoding="utf-8")
            conf = localize(shipped, self.ports, name, directory / name / "jetstream")
            (directory / name).mkdir(parents=True, exist_ok=True)
            (directory / f"{name}.conf").write_text(conf + include, encoding="utf-8")

    def url(self, name: str) -> str:
        """Client URL of one node."""
        return f"nats://127.0.0.1:{self.ports[name][0]}"

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node."""
        return [self.url(n) for n in self.NAMES]

    def monitor_url(self, name: str) -> str:
        """The monitoring endpoint (`/varz`, `/jsz`, ...) of one node."""
        return f"http://127.0.0.1:{self.ports[name][2]}"

    def start(self) -> None:
        """Start every node (logs in `<directory>/<name>.log`)."""
        for name in self.NAMES:
            self.start_node(name)

    def start_node(self, name: str) -> None:
        """Start one node, again after a kill: same ports, same store."""
        with (self.directory / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(nats_server_binary()), "-c", str(self.directory / f"{name}.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until JetStream answers through every node (a meta leader is elected)."""
        for url in self.urls:

            async def answers(url: str = url) -> bool:
                try:
                    nc = await nats.connect(
                        url, connect_timeout=1, allow_reconnect=False, **self.credentials
                    )
                except Exception:  # noqa: BLE001 - not listening yet
                    return False
                try:
                    await nc.jetstream(timeout=1.0).account_info()
                except Exception:  # noqa: BLE001 - no meta leader yet
                    return False
                finally:
                    await nc.close()
                return True

            await wait_for(answers, timeout_s, f"JetStream through {url}", every_s=0.25)

    async def provision(self, settings: Settings, roles: list[str], timeout_s: float = 30) -> None:
        """Create hivebus's streams, buckets and consumers through every node, as R3 allows.

        Retried until the meta group knows every peer (before, R3 cannot be placed).
        """

        async def provisioned() -> bool:
            try:
                await provision_all(",".join(self.urls), settings, roles)
            except Exception:  # noqa: BLE001 - R3 needs every peer known to the meta group
                return False
            return True

        await wait_for(provisioned, timeout_s, "R3 streams and buckets created", every_s=0.5)

    def kill(self, name: str) -> None:
        """SIGKILL one node (its store is kept)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def pause(self, name: str) -> None:
        """SIGSTOP one node: its sockets stay open, it answers nothing until `resume`."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT a paused node."""
        self.procs[name].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop every node still running (SIGTERM, then SIGKILL after a bound), paused ones too."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
