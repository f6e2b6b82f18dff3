"""Tools shipped with hivebus; name them in `hivebus.yaml` as `hivebus.agent.tools.MODULE:NAME`."""
