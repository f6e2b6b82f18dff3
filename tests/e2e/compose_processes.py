"""docker-compose.yml run as local processes, for the wiring test (imported as `compose_processes`).

No container engine runs here. `LocalCompose` runs each service of a loaded (interpolated)
compose file the way Docker would, as closely as processes on one machine allow:

- every container gets a root directory: bind mounts are copied there at their container path
  (copies, not links: hivebus resolves paths, and a link would lead out of the configuration's
  folder), named volumes are links to one shared directory per volume, and `/tmp` and the
  image's WORKDIR are its own;
- its environment is the image's `ENV`, then the service's `environment`, with container paths
  mapped into its root, `//<service>:<port>` mapped to `//127.0.0.1:<free port>` and the
  dashboard's listening port (`HIVEBUS_DASHBOARD_PORT`) to the free port standing for it;
- `nats` runs the local nats-server binary with its mounted configuration, `listen`, `http`
  and `store_dir` rewritten to loopback ports and its volume; a hivebus service runs
  `.venv/bin/hivebus <command>`; a service with `deploy.replicas: N` runs N times;
- `depends_on` conditions are waited for: `service_healthy` runs the service's healthcheck (the
  compose one, or the image's `HEALTHCHECK`) until it passes, `service_completed_successfully`
  waits for exit 0. Services under a profile are not started (none is active).

What it cannot do: enforce `read_only`, `cap_drop`, users or `:ro` (the tests run as root), or
isolate the network (everything is on loopback, ports differ from the container ports).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployfiles import hivebus_services, image_environment, stages
from hivetest import HIVEBUS, REPO, process_env

from hivebus.core.embedded import free_port, nats_server_binary

WAIT_S = 60.0
"""Bound on every wait: a healthcheck to pass, a one-shot to exit, a process to stop."""


class ComposeError(AssertionError):
    """A service did not start, stay up or stop as its compose file says; carries its log."""


@dataclass
class Container:
    """One replica of one service, started as a local process."""

    service: str
    replica: int
    root: Path
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        """`service-N`, as Compose names containers."""
        return f"{self.service}-{self.replica}"

    def log_tail(self, lines: int = 40) -> str:
        """The end of what the process printed."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalCompose:
    """The services of `compose` as processes under `workdir`."""

    compose: dict[str, Any]
    workdir: Path
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    containers: dict[str, list[Container]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Choose a free loopback port for every port a service publishes or is reached on."""
        for name, svc in self.services().items():
            for entry in svc.get("ports", []):
                self.ports[name, int(str(entry).rsplit(":", 1)[-1])] = free_port()
            for value in _strings(svc):
                for host, port in re.findall(r"//([\w-]+):(\d+)", value):
                    if host in self.services():
                        self.ports.setdefault((host, int(port)), free_port())

    def services(self) -> dict[str, dict[str, Any]]:
        """The services that run: those under no profile."""
        return {n: s for n, s in self.compose["services"].items() if not s.get("profiles")}

    def port(self, service: str, container_port: int) -> int:
        """The loopback port standing for `service:container_port`."""
        return self.ports[service, container_port]

    # --- one container ------------------------------------------------------------------

    def _mounts(self, svc: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
        """(source, container path, is a bind) for each volume entry, longest path first."""
        mounts = []
        for entry in svc.get("volumes", []):
            source, target, *_ = str(entry).split(":")
            mounts.append((source, target, source.startswith((".", "/"))))
        return sorted(mounts, key=lambda m: -len(m[1]))

    def volume(self, name: str) -> Path:
        """The directory standing for named volume `name` (shared by every container)."""
        path = self.workdir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def host_path(self, container: Container, svc: Mapping[str, Any], path: str) -> str:
        """Where `path` inside the container is on this machine."""
        for source, target, is_bind in self._mounts(svc):
            if path == target or path.startswith(target.rstrip("/") + "/"):
                rest = path[len(target) :].lstrip("/")
                base = container.root / target.lstrip("/") if is_bind else self.volume(source)
                return str(base / rest) if rest else str(base)
        return str(container.root / path.lstrip("/"))

    def _translate(self, container: Container, svc: Mapping[str, Any], value: str) -> str:
        def address(match: re.Match[str]) -> str:
            key = (match[1], int(match[2]))
            return f"//127.0.0.1:{self.ports[key]}" if key in self.ports else match[0]

        value = re.sub(r"//([\w-]+):(\d+)", address, value)
        if value.startswith("/"):
            value = self.host_path(container, svc, value)
        return value

    def _prepare(self, name: str, replica: int) -> Container:
        svc = self.services()[name]
        root = self.workdir / "containers" / f"{name}-{replica}"
        workdir = next((a for k, a in reversed(stages()[-1]) if k == "WORKDIR"), "/")
        container = Container(
            name, replica, root, [], {}, root, self.workdir / f"{name}-{replica}.log"
        )
        for source, target, is_bind in self._mounts(svc):
            at = root / target.lstrip("/")
            at.parent.mkdir(parents=True, exist_ok=True)
            if not is_bind:
                at.symlink_to(self.volume(source), target_is_directory=True)
            elif (REPO / source).is_dir():
                shutil.copytree(REPO / source, at, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(REPO / source, at)
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        ours = name in hivebus_services(self.compose)
        env = {k: v for k, v in image_environment().items() if k != "PATH"} if ours else {}
        env.update({k: str(v) for k, v in svc.get("environment", {}).items()})
        env = {k: self._translate(container, svc, v) for k, v in env.items()}
        if ours:
            # The image's /tmp is each container's own tmpfs: here, each its own folder.
            env["HIVEBUS_HEALTH_FILE"] = str(root / "tmp" / "hivebus-health")
            if (name, int(env.get("HIVEBUS_DASHBOARD_PORT", 0))) in self.ports:  # listens there
                env["HIVEBUS_DASHBOARD_PORT"] = str(
                    self.ports[name, int(env["HIVEBUS_DASHBOARD_PORT"])]
                )
            container.cwd = Path(self.host_path(container, svc, workdir))
            container.argv = [str(HIVEBUS), *svc["command"]]
        else:
            container.argv = [self._translate(container, svc, a) for a in svc["command"]]
        container.cwd.mkdir(parents=True, exist_ok=True)
        if name.startswith("nats"):
            self._localise_nats(container, svc)
        container.env = process_env(**env)
        return container

    def _localise_nats(self, container: Container, svc: Mapping[str, Any]) -> None:
        """Run the local binary; its mounted config listens on loopback, stores in its volume."""
        container.argv[0] = str(nats_server_binary())
        conf = Path(container.argv[container.argv.index("--config") + 1])
        text = conf.read_text(encoding="utf-8")
        for key, port in (("listen", 4222), ("http", 8222)):
            loopback = f"127.0.0.1:{self.ports.setdefault((container.service, port), free_port())}"
            text = re.sub(rf"^(\s*{key}:\s*)\S+", rf"\g<1>{loopback}", text, flags=re.MULTILINE)
        text = re.sub(
            r"^(\s*store_dir:\s*)(\S+)",
            lambda m: m[1] + self.host_path(container, svc, m[2]),
            text,
            flags=re.MULTILINE,
        )
        conf.write_text(text, encoding="utf-8")

    # --- lifecycle -----------------------------------------------------------------------

    def start(self, name: str) -> list[Container]:
        """Start every replica of `name` once its dependencies' conditions hold."""
        for dependency, rule in self.services()[name].get("depends_on", {}).items():
            if dependency not in self.containers:
                self.start(dependency)
            if rule["condition"] == "service_healthy":
                self.wait_healthy(dependency)
            elif rule["condition"] == "service_completed_successfully":
                self.wait_exited(dependency)
        if name in self.containers:
            return self.containers[name]
        replicas = int(self.services()[name].get("deploy", {}).get("replicas", 1))
        started = []
        for replica in range(1, replicas + 1):
            container = self._prepare(name, replica)
            with container.log.open("wb") as log:
                container.process = subprocess.Popen(
                    container.argv,
                    cwd=container.cwd,
                    env=container.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append(container)
        self.containers[name] = started
        return started

    def up(self) -> None:
        """Start every service, in dependency order."""
        for name in self.services():
            self.start(name)

    def healthcheck(self, name: str) -> Callable[[Container], bool] | None:
        """The service's healthcheck as a probe, or None when it has none (or it is disabled)."""
        check = self.services()[name].get("healthcheck")
        if check and check.get("disable"):
            return None
        if check:
            (url,) = [a for a in check["test"] if a.startswith("http")]

            def http(container: Container) -> bool:
                mapped = re.sub(
                    r"127\.0\.0\.1:(\d+)",
                    lambda m: f"127.0.0.1:{self.port(container.service, int(m[1]))}",
                    url,
                )
                try:
                    with urllib.request.urlopen(mapped, timeout=2) as answer:  # noqa: S310
                        return bool(answer.status == 200)
                except OSError:
                    return False

            return http
        if name not in hivebus_services(self.compose):
            return None
        health = next(a for k, a in stages()[-1] if k == "HEALTHCHECK")
        command = json.loads(health.split("CMD", 1)[1])
        assert command[0] == "hivebus"

        def run(container: Container) -> bool:
            done = subprocess.run(
                [str(HIVEBUS), *command[1:]],
                env=container.env,
                cwd=container.cwd,
                capture_output=True,
                timeout=30,
                check=False,
            )
            return done.returncode == 0

        return run

    def _until(self, what: str, container: Container, ok: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ok():
            exited = container.process is not None and container.process.poll() is not None
            if exited and what != "exit":
                raise ComposeError(f"{container.name} died: {container.log_tail()}")
            if time.monotonic() > deadline:
                raise ComposeError(
                    f"{container.name}: no {what} in {WAIT_S}s\n{container.log_tail()}"
                )
            time.sleep(0.2)

    def wait_healthy(self, name: str) -> None:
        """Every replica of `name` passes its healthcheck (bounded)."""
        probe = self.healthcheck(name)
        assert probe is not None, f"{name} has no healthcheck to wait for"
        for container in self.containers[name]:
            self._until("healthy", container, lambda c=container: probe(c))

    def wait_exited(self, name: str) -> None:
        """Every replica of one-shot `name` exited 0 (bounded)."""
        for container in self.containers[name]:
            process = container.process
            assert process is not None
            self._until("exit", container, lambda p=process: p.poll() is not None)
            if process.returncode != 0:
                raise ComposeError(
                    f"{container.name} exited {process.returncode}: {container.log_tail()}"
                )

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every running container, last started first; exit codes by container."""
        codes: dict[str, int | None] = {}
        for container in reversed(list(self.all())):
            process = container.process
            if process is None or process.poll() is not None:
                codes[container.name] = None if process is None else process.returncode
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                codes[container.name] = process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[container.name] = process.wait(timeout=10)
        return codes

    def all(self) -> Iterator[Container]:
        """Every container started, in start order."""
        for started in self.containers.values():
            yield from started


def _strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML node."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node
