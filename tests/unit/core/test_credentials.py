"""Credentials from settings: one way to authenticate, files read, errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from faststream.nats.security import NatsCredentials, NatsNKey, NatsUserPassword
from pydantic import ValidationError

from hivebus.core import ConfigError, Settings
from hivebus.core.credentials import connect_options, inbox_prefix, nats_security
from hivebus.core.identities import identities, render_authorization


def test_anonymous_by_default() -> None:
    """No credentials: an anonymous connection with the default inbox prefix."""
    settings = Settings()
    assert nats_security(settings) is None
    assert connect_options(settings) == {"inbox_prefix": "_INBOX"}


def test_a_user_gets_its_own_inbox_prefix_and_password() -> None:
    """A user and password; replies come back under `_INBOX_<user>` (what it may read)."""
    settings = Settings(nats_user="client", nats_password="pw")  # noqa: S106 - a test value
    security = nats_security(settings)
    assert isinstance(security, NatsUserPassword)
    assert (security.username, security.password) == ("client", "pw")
    assert inbox_prefix(settings) == "_INBOX_client"
    assert connect_options(settings)["user"] == "client"


def test_the_password_may_come_from_a_file(tmp_path: Path) -> None:
    """A mounted secret: the file's content, without its trailing newline."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n", encoding="utf-8")
    security = nats_security(Settings(nats_user="agent-a", nats_password_file=secret))
    assert isinstance(security, NatsUserPassword)
    assert security.password == "s3cret"  # noqa: S105 - a test value


def test_an_unreadable_or_empty_password_file_is_a_config_error(tmp_path: Path) -> None:
    """The error names the file; an empty secret is refused, not sent."""
    with pytest.raises(ConfigError, match="password file"):
        nats_security(Settings(nats_user="u", nats_password_file=tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        nats_security(Settings(nats_user="u", nats_password_file=empty))


def test_a_creds_file_or_an_nkey_seed(tmp_path: Path) -> None:
    """A JWT credentials file and a bare nkey seed file are told apart by their content."""
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\nx\n------END NATS USER JWT------\n")
    assert isinstance(nats_security(Settings(nats_creds=creds)), NatsCredentials)
    seed = tmp_path / "user.nk"
    seed.write_text("SUAM" + "A" * 54 + "\n")
    assert isinstance(nats_security(Settings(nats_creds=seed)), NatsNKey)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nats_user": "u"}, "no password"),
        ({"nats_password": "p"}, "HIVEBUS_NATS_USER is not"),
        ({"nats_user": "u", "nats_password": "p", "nats_password_file": "f"}, "not both"),
        ({"nats_user": "u", "nats_password": "p", "nats_creds": "c"}, "not both"),
        ({"nats_tls_cert": "c"}, "go together"),
        ({"approver_user": "approver"}, "go together"),
        ({"nats_inbox_prefix": "_INBOX.>"}, "pattern"),
    ],
)
def test_contradictory_credentials_are_refused(fields: dict[str, str], message: str) -> None:
    """Settings that could authenticate two ways, or half a way, fail at start with why."""
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]


def test_every_identity_has_its_own_inbox_and_password_variable() -> None:
    """The rendered block names each identity once, its inbox, and its environment variable."""
    users = identities(["researcher", "writer"])
    text = render_authorization(users, lambda user: f"${user.env_var}")
    for user in users:
        assert text.count(f'user: "{user.name}"') == 1
        assert f'"_INBOX_{user.name}.>"' in text
        assert f"password: ${user.env_var}\n" in text
    assert {user.env_var for user in users} >= {
        "HIVEBUS_PASSWORD_AGENT_RESEARCHER",
        "HIVEBUS_PASSWORD_PROVISIONER",
    }
