"""`send_email`: write one email to the workspace's outbox, once per idempotency key.

The tier is `write_risky`: with the default role policy (`approve: [write_risky]`) every call
waits for a person's approval first. The email is a file, `<outbox>/<key digest>.eml`, which
a mail relay (or a person) picks up; the outbox is `outbox` in the workspace unless
configured:

    tool_options:
      email:
        outbox: outbox               # relative to the workspace
        from: "hivebus <agent@example.com>"

Idempotent by the call's key (`run:step:call`, the same when a resumed run calls it again):

    no file for the key                    -> written atomically (a reader never sees half)
    a file for the key, the same email     -> nothing is written: the call was already made
    a file for the key, another email      -> a `permanent` error saying so; nothing changes

The email carries no date or random id, so the same call always makes the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tool import ToolContext, tool
from hivebus.agent.tools.workspace import resolve_in_workspace
from hivebus.contracts import ToolErrorKind

DEFAULT_OUTBOX = "outbox"
DEFAULT_FROM = "hivebus <hivebus@localhost>"
MAX_BODY_BYTES = 1024 * 1024
MAX_SUBJECT_CHARS = 998
MAX_RECIPIENTS = 50

_ADDRESS = re.compile(r"[^@\s,;<>\"()]+@[^@\s,;<>\"()]+\.[^@\s,;<>\"()]+")


def _invalid(message: str, suggestion: str) -> ToolFailure:
    return ToolFailure(message, suggestion, ToolErrorKind.INVALID_ARGUMENTS)


def _recipients(to: str) -> list[str]:
    addresses = [part.strip() for part in to.split(",") if part.strip()]
    if not addresses:
        raise _invalid("`to` names no recipient", "give an address such as 'ana@example.com'")
    if len(addresses) > MAX_RECIPIENTS:
        raise _invalid(
            f"`to` names {len(addresses)} recipients; at most {MAX_RECIPIENTS} are allowed",
            "send to fewer recipients",
        )
    bad = [a for a in addresses if not _ADDRESS.fullmatch(a)]
    if bad:
        raise _invalid(
            f"not an email address: {', '.join(repr(a) for a in bad[:5])}",
            "give plain addresses separated by commas, such as 'ana@example.com, bo@example.org'",
        )
    return addresses


def render(to: list[str], subject: str, body: str, sender: str, key: str) -> bytes:
    """The email as the bytes of an `.eml` file: the same arguments, the same bytes."""
    if "\r" in subject or "\n" in subject:
        raise _invalid("the subject contains a line break", "write the subject on one line")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise _invalid(
            f"the subject has {len(subject)} characters; at most {MAX_SUBJECT_CHARS}",
            "shorten the subject",
        )
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise _invalid(f"the body is larger than {MAX_BODY_BYTES} bytes", "shorten the body")
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Message-ID"] = f"<{_digest(key)[:32]}@hivebus>"
    message["X-Hivebus-Idempotency-Key"] = key
    message.set_content(body)
    return message.as_bytes()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _outbox(context: ToolContext) -> tuple[Path, str]:
    options = context.options.get("email", {})
    relative = str(options.get("outbox", DEFAULT_OUTBOX))
    folder = resolve_in_workspace(context.workspace, relative)
    folder.mkdir(parents=True, exist_ok=True)
    return folder, relative.rstrip("/")


def put_once(folder: Path, name: str, data: bytes) -> bool:
    """Create `folder/name` holding `data` unless it exists; True if this call created it.

    The bytes go to a temporary file first, which is then hard-linked to its name: the link
    either creates the whole file or fails because the name is taken, so two writers of one
    key never both write, and a reader never sees half an email.
    """
    target = folder / name
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


@tool(tier="write_risky", timeout_s=10.0)
def send_email(to: str, subject: str, body: str, context: ToolContext) -> dict[str, object]:
    """Send an email (plain text) to one or more addresses, separated by commas.

    Returns where the email was put and whether this call was a repeat of one already sent.
    """
    sender = str(context.options.get("email", {}).get("from", DEFAULT_FROM))
    data = render(_recipients(to), subject, body, sender, context.idempotency_key)
    folder, relative = _outbox(context)
    name = f"{_digest(context.idempotency_key)[:32]}.eml"
    written = put_once(folder, name, data)
    if not written and (folder / name).read_bytes() != data:
        raise ToolFailure(
            f"an email with this call's idempotency key ({context.idempotency_key}) was "
            f"already written to {relative}/{name} with different content; nothing was sent",
            "do not repeat the call with other arguments; to send another email, make a new "
            "call in a later turn",
            ToolErrorKind.PERMANENT,
        )
    return {
        "to": to,
        "subject": subject,
        "outbox": f"{relative}/{name}",
        "bytes": len(data),
        "replayed": not written,
    }
