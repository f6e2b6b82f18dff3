"""Who a process is on the bus: user and password, a creds or nkey file, TLS, its inbox prefix.

Built once from `Settings`; `new_broker` and every direct nats-py connection use the same
options, so a process has one identity whatever library made the connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from faststream.nats.security import (
    NatsCredentials,
    NatsNKey,
    NatsSecurity,
    NatsUserPassword,
    parse_security,
)
from pydantic import SecretStr

from hivebus.core.errors import ConfigError
from hivebus.core.settings import Settings

DEFAULT_INBOX_PREFIX = "_INBOX"
JWT_MARKER = "-----BEGIN NATS USER JWT-----"


def as_user(settings: Settings, user: str, password: SecretStr | None) -> Settings:
    """`settings`, connecting as `user` with `password` instead of its own identity."""
    return settings.model_copy(
        update={
            "nats_user": user,
            "nats_password": password,
            "nats_password_file": None,
            "nats_creds": None,
            "nats_inbox_prefix": None,
        }
    )


def inbox_prefix(settings: Settings) -> str:
    """The prefix of this process's reply subjects: the permissions let it read only those."""
    if settings.nats_inbox_prefix is not None:
        return settings.nats_inbox_prefix
    if settings.nats_user is not None:
        return f"{DEFAULT_INBOX_PREFIX}_{settings.nats_user}"
    return DEFAULT_INBOX_PREFIX


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def _tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.nats_tls_ca is None and settings.nats_tls_cert is None:
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
        )
        if settings.nats_tls_cert is not None and settings.nats_tls_key is not None:
            context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the NATS TLS files cannot be used: {exc}") from exc
    return context


def nats_security(settings: Settings) -> NatsSecurity | None:
    """FastStream's description of this process's identity; None for an anonymous connection.

    Raises:
        ConfigError: a password, creds or TLS file named in the settings cannot be read.
    """
    tls = _tls(settings)
    if settings.nats_user is not None:
        if settings.nats_password_file is not None:
            password = _read(settings.nats_password_file, "NATS password file").strip()
        else:
            password = settings.nats_password.get_secret_value() if settings.nats_password else ""
        if not password:
            raise ConfigError(f"the NATS password of {settings.nats_user!r} is empty")
        return NatsUserPassword(settings.nats_user, password, ssl_context=tls)
    if settings.nats_creds is not None:
        if JWT_MARKER in _read(settings.nats_creds, "NATS credentials file"):
            return NatsCredentials(str(settings.nats_creds), ssl_context=tls)
        return NatsNKey.from_file(settings.nats_creds, ssl_context=tls)
    if tls is not None:
        return NatsSecurity(ssl_context=tls)
    return None


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` giving the same identity as `new_broker`."""
    options = parse_security(nats_security(settings))
    options = {key: value for key, value in options.items() if value is not None}
    options["inbox_prefix"] = inbox_prefix(settings)
    return options
