"""Golden runs: a finished task recorded as a directory, replayed as a regression test.

files     the directory's format: task.yaml, golden.yaml, models/, tools/, expect.yaml
observe   what a task did, read from its events (recording and replay read alike)
expect    expectations (exact, pattern, schema, range, ceiling) and the diff against them
record    `hivebus golden record`: events to a golden directory
replay    `hivebus golden run`: a golden directory through a local stack, judged
command   the `golden` commands
plugin    the pytest plugin (`pytest --golden DIR`)
"""
