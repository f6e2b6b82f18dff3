"""The pytest plugin: `pytest --golden DIR` makes each golden directory under DIR one test.

Installed with hivebus (entry point `pytest11`), it is idle until `--golden` is given. Each
test replays its golden task as `hivebus golden run` does (embedded server, recorded models,
live tools unless `--golden-tools recorded`) and fails with the diff. Golden directories
that cannot be read fail as tests too, with the reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hivebus.console.golden.files import GoldenError, golden_dirs, load_golden
from hivebus.console.golden.replay import DEFAULT_TIMEOUT_S, Source, replay_config, run_golden
from hivebus.core import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--golden DIR` (repeatable), `--golden-tools`, `--golden-models`, `--golden-config`."""
    group = parser.getgroup("hivebus-golden", "hivebus golden runs")
    group.addoption(
        "--golden",
        action="append",
        default=[],
        metavar="DIR",
        help="Replay each golden directory in DIR (or DIR itself) as a test.",
    )
    group.addoption("--golden-tools", choices=[s.value for s in Source], default=Source.LIVE.value)
    group.addoption(
        "--golden-models", choices=[s.value for s in Source], default=Source.RECORDED.value
    )
    group.addoption("--golden-config", default=None, metavar="FILE", help="hivebus.yaml to use.")


class GoldenMismatchError(Exception):
    """A golden task that did not meet its expectations."""


class GoldenItem(pytest.Item):
    """One golden directory, replayed."""

    def __init__(self, *, path_dir: Path, **kwargs: Any) -> None:
        """Replay `path_dir`."""
        super().__init__(**kwargs)
        self.path_dir = path_dir

    def runtest(self) -> None:
        """Replay the golden task; raise `GoldenMismatchError` listing each difference."""
        option = self.config.option
        settings = Settings()
        try:
            golden = load_golden(self.path_dir)
            config_file = Path(option.golden_config) if option.golden_config else None
            config = replay_config(golden, config_file, settings)
        except GoldenError as exc:
            raise GoldenMismatchError(str(exc)) from exc
        outcome = asyncio.run(
            run_golden(
                golden,
                settings=settings,
                config=config,
                models=Source(option.golden_models),
                tools=Source(option.golden_tools),
                timeout_s=DEFAULT_TIMEOUT_S,
            )
        )
        if not outcome.passed:
            raise GoldenMismatchError("\n".join(outcome.differences))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:  # noqa: ARG002 - pytest's signature
        """The differences, without a traceback."""
        if isinstance(excinfo.value, GoldenMismatchError):
            return f"golden task {self.path_dir} differs:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the test comes from: its directory."""
        return self.path_dir, None, f"golden: {self.name}"


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Add one `GoldenItem` per golden directory named by `--golden`."""
    roots = [Path(p) for p in config.getoption("golden")]
    if not roots:
        return
    try:
        found = golden_dirs(roots)
    except GoldenError as exc:
        raise pytest.UsageError(f"--golden: {exc}") from exc
    items.extend(
        GoldenItem.from_parent(session, name=f"golden[{path.name}]", path_dir=path)
        for path in found
    )
