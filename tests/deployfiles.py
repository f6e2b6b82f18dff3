"""Reading the deployment files as Docker does, for the deployment tests (`deployfiles`).

No container engine runs here, so the tests read the files themselves: `load` parses the
compose files, merges an override the way `docker compose -f A -f B` does (for the keys these
files use) and, given an environment, interpolates `${VAR...}` and resolves variables listed
without a value; `references` lists the variables a file uses; helpers name the hivebus
services and read their environment and volumes. `stages` reads the Dockerfile's instructions
and `image_environment` the `ENV` of its final stage.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hivetest import REPO

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
CLUSTER = REPO / "docker-compose.cluster.yml"
ENV_EXAMPLE = REPO / ".env.example"

HIVEBUS_IMAGE = "${HIVEBUS_IMAGE:-hivebus:local}"
"""The image reference every hivebus service names (built from the Dockerfile)."""

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
"""Compose's interpolation: `$$`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?e}`, `${VAR:+a}`,
`$VAR`."""

_REPLACED_LISTS = frozenset({"command", "entrypoint", "test"})
"""Sequences an override replaces whole (compose-spec merge rules)."""


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty, as Compose refuses it."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` with every variable reference replaced as Compose replaces it."""

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        value = env.get(name)
        op, arg = match["op"], match["arg"] or ""
        empty_counts = bool(op) and op.startswith(":")
        missing = value is None or (empty_counts and value == "")
        if op in {":-", "-"}:
            return arg if missing else str(value)
        if op in {":?", "?"}:
            if missing:
                raise InterpolationError(f"{name}: {arg}")
            return str(value)
        if op in {":+", "+"}:
            return "" if missing else arg
        return value or ""

    return _VARIABLE.sub(one, text)


def references(text: str) -> set[str]:
    """The variables `text` refers to (`${VAR...}` or `$VAR`; `$$` is no reference)."""
    return {m["braced"] or m["named"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def _volume_target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry["target"])
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def merge(base: Any, override: Any, key: str = "") -> Any:
    """`override` merged onto `base` by the compose-spec rules these files rely on.

    Mappings merge key by key; `volumes` lists merge by container path; `command`,
    `entrypoint` and healthcheck `test` are replaced. Any other list present in both is an
    error here, so a new kind of override cannot be merged wrongly without notice.
    """
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            merged[name] = merge(base[name], value, name) if name in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if key in _REPLACED_LISTS:
            return list(override)
        if key == "volumes":
            by_target = {_volume_target(v): v for v in base}
            by_target.update({_volume_target(v): v for v in override})
            return list(by_target.values())
        raise NotImplementedError(f"no merge rule for the list {key!r}: see compose-spec merge")
    return override


def _resolve(node: Any, env: Mapping[str, str], key: str = "") -> Any:
    if isinstance(node, dict):
        resolved = {k: _resolve(v, env, k) for k, v in node.items()}
        if key == "environment":  # `KEY:` without a value is taken from the environment
            resolved = {
                k: (env[k] if v is None else v)
                for k, v in resolved.items()
                if v is not None or k in env
            }
        return resolved
    if isinstance(node, list):
        return [_resolve(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load(*paths: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The files merged in order; interpolated and resolved against `env` when given."""
    merged: dict[str, Any] = {}
    for path in paths:
        merged = merge(merged, yaml.safe_load(path.read_text(encoding="utf-8")))
    return merged if env is None else _resolve(copy.deepcopy(merged), env)


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of a loaded compose file, by name."""
    return dict(compose["services"])


def hivebus_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the hivebus image (before interpolation: they name HIVEBUS_IMAGE)."""
    return {
        name: svc
        for name, svc in services(compose).items()
        if "build" in svc or "HIVEBUS_IMAGE" in str(svc.get("image", ""))
    }


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    """A service's environment as a mapping (these files use the mapping form)."""
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return env


def binds(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's bind mounts (short syntax), container path -> host path relative to REPO."""
    found = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        if source.startswith((".", "/")):
            found[target] = source
    return found


def named_volumes(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's named volumes, container path -> volume name."""
    found = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        if not source.startswith((".", "/")):
            found[target] = source
    return found


def host_file(service: Mapping[str, Any], container_path: str) -> Path | None:
    """The repository file a bind mount puts at `container_path` (a file or inside a folder)."""
    path = posixpath.normpath(container_path)
    for target, source in sorted(binds(service).items(), key=lambda b: -len(b[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return REPO / source / path[len(target) :].lstrip("/")
    return None


def nats_variables(text: str) -> set[str]:
    """The environment variables a nats-server configuration reads (`key: $NAME`)."""
    return set(re.findall(r"[:=]\s*\$([A-Za-z_][A-Za-z0-9_]*)", text))


def nats_includes(text: str) -> list[str]:
    """The files a nats-server configuration includes, as written (relative to it)."""
    return re.findall(r"^\s*include\s+['\"]?([^'\"\s]+)", text, re.MULTILINE)


def env_example() -> dict[str, str]:
    """Every variable `.env.example` lists, set or commented out (`# NAME=value`)."""
    listed = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            listed[match[1]] = match[2]
    return listed


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(i.split(None, 1)[0].upper(), i.split(None, 1)[1]) for i in joined]


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each Dockerfile stage, in order (each starts with its FROM)."""
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


def image_environment() -> dict[str, str]:
    """The `ENV` of the image's final stage (values without spaces or quotes, as written)."""
    env = {}
    for kind, args in stages()[-1]:
        if kind == "ENV":
            env.update(pair.split("=", 1) for pair in args.split())
    return env
