"""hivebus console: the `hivebus` CLI."""
