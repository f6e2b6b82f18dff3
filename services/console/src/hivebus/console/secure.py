"""`up --secure`: the embedded server with the shipped identities, each with a fresh password.

What runs locally is what is deployed: the same `authorization` block as `infra/nats/auth.conf`
(`hivebus.core.identities`), only with generated passwords instead of environment references.
Each service of the local stack connects as its own identity; `credentials_file` writes the
client's and the approver's for the commands a person runs beside it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr

from hivebus.core import Settings
from hivebus.core.credentials import as_user
from hivebus.core.identities import Identity, agent_identity_name, identities, render_authorization


class LocalIdentities:
    """Every identity of a configuration with its own random password, for one server's life."""

    def __init__(self, roles: Iterable[str]) -> None:
        """Generate a password for each identity of a stack running `roles`."""
        self.users: list[Identity] = identities(roles)
        self.passwords = {user.name: secrets.token_urlsafe(24) for user in self.users}

    def authorization(self) -> str:
        """The nats-server `authorization` block with these passwords."""
        return render_authorization(self.users, lambda user: f'"{self.passwords[user.name]}"')

    def settings(self, base: Settings, name: str) -> Settings:
        """`base`, connecting as identity `name`.

        Raises:
            KeyError: there is no such identity.
        """
        return as_user(base, name, SecretStr(self.passwords[name]))

    def agent(self, base: Settings, role: str) -> Settings:
        """`base`, connecting as the agents of `role`."""
        return self.settings(base, agent_identity_name(role))

    def credentials_file(self, path: Path, name: str) -> Path:
        """Write `name`'s credentials as an env file (mode 600) a shell can `source`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(
            f"export HIVEBUS_NATS_USER={name}\n"
            f"export HIVEBUS_NATS_PASSWORD={self.passwords[name]}\n",
            encoding="utf-8",
        )
        return path
