"""The demo's failure and approval paths with the shipped permissions on (`demo --secure`).

Each service connects as its own identity; the runs end as they do without permissions, and
the server refused nothing: no service needs a right it was not given.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hivetest import HIVEBUS, process_env

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("scenario", "code"),
    [("failure", 3), ("approval", 0)],  # 3: partial, as the failure demo ends
)
def test_the_demo_runs_the_same_with_permissions_on(
    tmp_path: Path, scenario: str, code: int
) -> None:
    """Same exit code as without permissions, and no permissions violation in the server log."""
    data = tmp_path / "data"
    args = ["--secure", "--scenario", scenario, "--approve", "yes", "--data-dir", str(data)]
    done = subprocess.run(
        [str(HIVEBUS), "demo", *args],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == code, done.stdout[-2000:] + done.stderr[-4000:]
    log = (data / "nats-server.log").read_text(errors="replace")
    assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]
