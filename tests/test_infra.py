"""Shipped server configurations: valid for nats-server, durable by default."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hivetest import HIVEBUS, REPO

from hivebus.core import load_config
from hivebus.core.embedded import nats_server_binary, server_config
from hivebus.core.identities import identities


def test_shipped_config_is_valid_and_fsyncs_every_write(tmp_path: Path) -> None:
    """infra/nats/nats-server.conf passes `nats-server -t` and sets `sync_interval: always`."""
    shipped = (REPO / "infra" / "nats" / "nats-server.conf").read_text(encoding="utf-8")
    assert "sync_interval: always" in shipped
    local = tmp_path / "nats.conf"
    local.write_text(shipped.replace("/data/jetstream", str(tmp_path / "js")), encoding="utf-8")
    shutil.copy(REPO / "infra" / "nats" / "auth.conf", tmp_path / "auth.conf")
    passwords = {user.env_var: "x" for user in identities(load_config(REPO / "hivebus.yaml").roles)}
    checked = subprocess.run(
        [str(nats_server_binary()), "-c", str(local), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **passwords},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_embedded_server_fsyncs_every_write(tmp_path: Path) -> None:
    """The embedded server's generated configuration also uses `sync_interval: always`."""
    assert "sync_interval: always" in server_config(4222, tmp_path)


def test_the_shipped_identities_are_what_nats_auth_prints() -> None:
    """infra/nats/auth.conf is `hivebus nats-auth` for the sample hivebus.yaml, unedited."""
    printed = subprocess.run(
        [str(HIVEBUS), "nats-auth", "--config", str(REPO / "hivebus.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    shipped = (REPO / "infra" / "nats" / "auth.conf").read_text(encoding="utf-8")
    assert printed == shipped, "regenerate: hivebus nats-auth --out infra/nats/auth.conf"
