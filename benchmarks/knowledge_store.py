"""What one knowledge-store commit costs, with 100 notes in the repository and with 10,000.

The store is the single writer of a Git repository; its commit cost must not grow with the
number of notes. Each figure is the mean of `--commits` writes of a new note through
`KnowledgeStore.apply` (validation, the revision check, the commit), on the same machine in
the same run. Not part of the test suite.

Usage: .venv/bin/python benchmarks/knowledge_store.py [--commits N] [--large N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from hivebus.contracts.knowledge import NoteWrite
from hivebus.knowledge.store import KnowledgeStore


def populate(root: Path, notes: int) -> None:
    """Add `notes` notes in one commit (setting up, not measured)."""
    for i in range(notes):
        folder = root / "shared" / f"bulk-{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note-{i}.md").write_text(f"---\ntitle: note {i}\n---\n\nbody {i}\n")
    env = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)  # noqa: S607
    subprocess.run(["git", "commit", "-qm", "bulk"], cwd=root, check=True, env=env)  # noqa: S607


def per_commit_ms(store: KnowledgeStore, label: str, commits: int) -> float:
    """Mean milliseconds of one committed write of a new note."""
    start = time.perf_counter()
    for i in range(commits):
        result = store.apply(
            NoteWrite(task_id="bench", path=f"tasks/bench/{label}-{i}.md", body=f"note {i}")
        )
        assert result.status == "committed", result  # noqa: S101 - a benchmark that lies is worse
    return round((time.perf_counter() - start) * 1000 / commits, 2)


def main() -> None:
    """Measure with a small and a large repository; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--large", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hivebus-kb-bench-") as tmp:
        root = Path(tmp) / "kb"
        store = KnowledgeStore(root)
        populate(root, 100)
        small = per_commit_ms(store, "small", args.commits)
        populate(root, args.large - 100)
        large = per_commit_ms(store, "large", args.commits)
    print(
        json.dumps(
            {
                "commits_measured": args.commits,
                "ms_per_commit": {"100_notes": small, f"{args.large}_notes": large},
                "commits_per_s": {"100_notes": round(1000 / small, 1)},
                "ratio_large_to_small": round(large / small, 3),
                "target_max_ratio": 1.5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
