"""What knowledge-store commits cost, with 100 notes in the repository and with 10,000.

The store is the single writer of a Git repository; its commit cost must not grow with the
number of notes. Measured on the same machine in the same run, each in a fresh repository:

- `ms_per_commit`: the mean of `--commits` writes of a new note through `KnowledgeStore.apply`
  (validation, the revision check, the commit, its own durable sync), the bulk notes under
  `shared/bulk-XX/` (100 folders) and the new ones in `tasks/bench/`;
- `batched`: `--batches` calls of `KnowledgeStore.apply_many` with `--batch` writes of new
  notes each (one durable sync per call, as the service's group commit does): notes per second;
- `tasks_layout`: both again with the layout summary notes really have,
  `tasks/<shard>/<task>/summary.md` (`task_folder`: 256 shards), with 100 or 10,000 task
  folders;
- `flat_tasks_layout`: the layout before the shards, `tasks/<task>/summary.md`, where the
  `tasks` tree itself has one entry per task and every commit of a summary writes a new copy.

Not part of the test suite. Usage:
    .venv/bin/python benchmarks/knowledge_store.py [--commits N] [--large N] [--batch N]
        [--batches N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hivebus.contracts.knowledge import NoteWrite, task_folder
from hivebus.knowledge.store import KnowledgeStore

SMALL = 100
"""Notes in the small repository."""


def shared_path(i: int) -> str:
    """A bulk note under `shared/`, 100 folders of them."""
    return f"shared/bulk-{i % 100:02d}/note-{i}.md"


def summary_path(i: int) -> str:
    """A task's summary note where the orchestrator writes it."""
    return f"{task_folder(f't-{i:012x}')}/summary.md"


def flat_summary_path(i: int) -> str:
    """A task's summary note in the layout before shards: one folder per task under `tasks/`."""
    return f"tasks/t-{i:012x}/summary.md"


def populate(root: Path, paths: list[str]) -> None:
    """Add one note at each path in one commit of the git binary (setting up, not measured)."""
    for path in paths:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"---\ntitle: {path}\n---\n\nbody of {path}\n")
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)  # noqa: S607
    # No `gc --auto` (it would start after 6,700 loose objects and run during the measurement).
    commit = ["git", "-c", "gc.auto=0", "commit", "-qm", "bulk"]
    subprocess.run(commit, cwd=root, check=True, env=env)


def store_with(tmp: Path, name: str, paths: list[str]) -> KnowledgeStore:
    """A fresh store holding the notes at `paths`, reopened as the service would.

    The set-up's writes are flushed before it returns, so the first measured sync does not
    pay for them.
    """
    root = tmp / name
    KnowledgeStore(root)
    populate(root, paths)
    store = KnowledgeStore(root)
    os.sync()
    return store


def _new_note(path: str, i: int) -> NoteWrite:
    return NoteWrite(task_id="bench", role="bench", run_id=f"r{i}", path=path, body=f"note {i}")


def per_commit_ms(store: KnowledgeStore, path_of: Callable[[int], str], commits: int) -> float:
    """Mean milliseconds of one committed write of a new note, one `apply` each."""
    start = time.perf_counter()
    for i in range(commits):
        result = store.apply(_new_note(path_of(i), i))
        assert result.status == "committed", result  # noqa: S101 - a benchmark that lies is worse
    return round((time.perf_counter() - start) * 1000 / commits, 2)


def batched_notes_per_s(
    store: KnowledgeStore, path_of: Callable[[int], str], batch: int, batches: int
) -> float:
    """Notes committed per second through `apply_many`, `batch` new notes per call."""
    start = time.perf_counter()
    for b in range(batches):
        results = store.apply_many([_new_note(path_of(b * batch + i), i) for i in range(batch)])
        assert all(getattr(r, "status", None) == "committed" for r in results), results  # noqa: S101
    return round(batch * batches / (time.perf_counter() - start), 1)


def measure(
    tmp: Path,
    name: str,
    bulk: Callable[[int], str],
    new: Callable[[int], str],
    args: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    """Single commits and batches with `SMALL` and with `args.large` notes laid out by `bulk`."""
    figures: dict[str, dict[str, float]] = {"ms_per_commit": {}, "batched_notes_per_s": {}}
    for count in (SMALL, args.large):
        store = store_with(tmp, f"{name}-{count}", [bulk(i) for i in range(count)])
        label = f"{count}_notes"
        figures["ms_per_commit"][label] = per_commit_ms(
            store, lambda i: new(1_000_000 + i), args.commits
        )
        figures["batched_notes_per_s"][label] = batched_notes_per_s(
            store, lambda i: new(2_000_000 + i), args.batch, args.batches
        )
    return figures


def layout(name: str, measured: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One layout's figures, with its large-to-small ratio."""
    large, small = f"{args.large}_notes", f"{SMALL}_notes"
    single = measured["ms_per_commit"]
    return {
        "layout": name,
        "ms_per_commit": single,
        "ratio_large_to_small": round(single[large] / single[small], 3),
        "batched_notes_per_s": measured["batched_notes_per_s"],
    }


def main() -> None:
    """Measure both layouts with a small and a large repository; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    large = f"{args.large}_notes"
    small = f"{SMALL}_notes"
    with tempfile.TemporaryDirectory(prefix="hivebus-kb-bench-") as tmp:
        shared = measure(Path(tmp), "shared", shared_path, lambda i: f"tasks/bench/n-{i}.md", args)
        tasks = measure(Path(tmp), "tasks", summary_path, summary_path, args)
        flat = measure(Path(tmp), "flat", flat_summary_path, flat_summary_path, args)
    single = shared["ms_per_commit"]
    report = {
        "commits_measured": args.commits,
        "ms_per_commit": single,
        "commits_per_s": {small: round(1000 / single[small], 1)},
        "ratio_large_to_small": round(single[large] / single[small], 3),
        "target_max_ratio": 1.5,
        "batched": {
            "batch_size": args.batch,
            "batches": args.batches,
            "notes_per_s": shared["batched_notes_per_s"],
        },
        "tasks_layout": layout("tasks/<shard>/<task>/summary.md (256 shards)", tasks, args),
        "flat_tasks_layout": layout("tasks/<task>/summary.md, before the shards", flat, args),
        "target_min_notes_per_s": 60,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
