#!/usr/bin/env python3
"""One entry point for a fresh clone: sets up `.venv`, then runs the demo or the test suite.

Usage:
    python3 dev.py demo [hivebus demo options...]   # the main job, no API key needed
    python3 dev.py test [pytest options...]         # ruff, mypy --strict, then the whole suite
                                                    # (apt-get adds chromium, nodejs, npm)
    python3 dev.py sync                             # only (re)build the environment

Needs only Python 3.11+ and git. The first run creates `.venv` at the repository root,
installs `uv` into it and lets uv install the locked workspace (`uv.lock`) there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".hivebus-synced"


def _run(*args: str | Path) -> None:
    completed = subprocess.run([str(a) for a in args], cwd=ROOT, check=False)
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def sync() -> None:
    """Create `.venv` and install the locked workspace into it, unless already up to date."""
    if sys.version_info < (3, 11):
        sys.exit(f"hivebus needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    lock = ROOT / "uv.lock"
    if STAMP.exists() and STAMP.stat().st_mtime >= lock.stat().st_mtime:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not (BIN / "uv").exists():
        _run(BIN / "python", "-m", "pip", "install", "--quiet", "uv>=0.13,<0.14")
    os.environ["UV_PROJECT_ENVIRONMENT"] = str(VENV)
    # Trust the platform's certificate store too (corporate proxies install their CA there).
    os.environ.setdefault("UV_SYSTEM_CERTS", "1")
    _run(BIN / "uv", "sync", "--frozen", "--all-packages", "--python", BIN / "python")
    STAMP.touch()


TEST_PROGRAMS = {"chromium": "chromium", "node": "nodejs", "npm": "npm"}
"""What the tests run from Debian, by command: the browser tests drive `chromium` through the
`playwright` package (its own browser download does not work everywhere); the Node.js client
example (`examples/clients/node`) needs `node` and `npm`."""


def ensure_test_programs() -> None:
    """Install the Debian packages of `TEST_PROGRAMS` that are missing (idempotent).

    Needs apt-get and root, as on CI; elsewhere it says what to run and leaves the tests to
    fail saying the same.
    """
    missing = sorted({pkg for cmd, pkg in TEST_PROGRAMS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    apt = shutil.which("apt-get")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if apt is None or not is_root:
        print(
            f"dev.py: {', '.join(missing)} missing and cannot be installed here (needs apt-get "
            f"as root): run `sudo apt-get install -y {' '.join(missing)}`; tests fail without",
            file=sys.stderr,
        )
        return
    print(f"dev.py: installing {', '.join(missing)} for the tests (apt-get)", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *missing]):
        done = subprocess.run(args, cwd=ROOT, env=env, check=False)
        if done.returncode != 0:
            print(f"dev.py: `{' '.join(args)}` failed ({done.returncode})", file=sys.stderr)
            return


def main() -> None:
    """Dispatch `demo`, `test` or `sync`."""
    command, *rest = sys.argv[1:] or ["help"]
    if command == "sync":
        sync()
    elif command == "demo":
        sync()
        _run(BIN / "hivebus", "demo", *rest)
    elif command == "test":
        sync()
        _run(BIN / "ruff", "format", "--check", ".")
        _run(BIN / "ruff", "check", ".")
        _run(BIN / "mypy", "contracts/src", "services", "benchmarks")
        ensure_test_programs()
        # pytest exits 5 when it collected no test: that is a failure here, not a pass.
        # The golden tasks under examples/golden run as tests too (the `hivebus-golden` plugin).
        golden = ["--golden", "examples/golden"]
        completed = subprocess.run([str(BIN / "pytest"), *golden, *rest], cwd=ROOT, check=False)
        if completed.returncode == 5:  # noqa: PLR2004 - pytest's "no tests collected" code
            print("dev.py: pytest collected no tests; failing", file=sys.stderr)
            sys.exit(1)
        sys.exit(completed.returncode)
    else:
        print(__doc__)
        sys.exit(0 if command == "help" else 2)


if __name__ == "__main__":
    main()
