"""Calling Git: libgit2 in process for reads and commits, the `git` binary for `fsck`.

A call of the `git` binary goes through `run_git`, which never builds a shell string, kills git
after a timeout, and turns every failure into a `GitError` carrying the command and git's
stderr. A libgit2 call runs inside `libgit2_errors`, which turns what libgit2 raises into a
`GitError` naming the operation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pygit2

from hivebus.knowledge.errors import KnowledgeError

__all__ = ["GitError", "find_git", "git_environment", "libgit2_errors", "run_git"]


class GitError(KnowledgeError):
    """A git call failed, timed out or could not start; carries the command and stderr."""

    def __init__(
        self,
        command: list[str],
        stderr: str,
        *,
        returncode: int | None = None,
        retryable: bool = False,
    ) -> None:
        """Record the failed command (argument list, no environment) and what git said."""
        self.command = command
        self.stderr = stderr
        self.returncode = returncode
        self.retryable = retryable
        """True for a timeout or a batch that could not be made durable, which may pass; a
        refusal by git will not."""
        code = f" ({returncode})" if returncode is not None else ""
        super().__init__(f"git failed{code}: {' '.join(command)}: {stderr.strip()}")


@contextmanager
def libgit2_errors(*operation: str, retryable: bool = False) -> Iterator[None]:
    """Turn what libgit2 (or the file system under it) raises into a `GitError`.

    `operation` names what was being done, such as `("commit", path)`; it stands where the
    command of a `git` call would.
    """
    try:
        yield
    except (pygit2.GitError, OSError, ValueError) as exc:
        raise GitError(["libgit2", *operation], str(exc), retryable=retryable) from exc


def find_git() -> str:
    """The absolute path of the `git` binary on PATH; `GitError` when there is none."""
    git = shutil.which("git")
    if git is None:
        raise GitError(["git"], "git is not installed or not on PATH")
    return git


def git_environment() -> dict[str, str]:
    """The environment every git call gets: no system or global config, no prompts, C locale."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_LITERAL_PATHSPECS": "1",  # a path is a path, never `:(glob)` magic
        "GIT_OPTIONAL_LOCKS": "0",  # reads never take the index lock
        "LC_ALL": "C",
    }


def run_git(
    git: str,
    args: tuple[str, ...],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    stdin: bytes | None = None,
    ok: frozenset[int] = frozenset({0}),
) -> subprocess.CompletedProcess[bytes]:
    """Run `git *args` in `cwd`; raise `GitError` unless its exit code is in `ok`."""
    command = ["git", *args]
    try:
        done = subprocess.run(  # noqa: S603 - argument list, absolute git, scrubbed env
            [git, *args],
            cwd=cwd,
            env=env,
            input=stdin,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(command, f"timed out after {timeout_s}s", retryable=True) from exc
    except OSError as exc:
        raise GitError(command, str(exc)) from exc
    if done.returncode not in ok:
        raise GitError(command, done.stderr.decode("utf-8", "replace"), returncode=done.returncode)
    return done
