"""hivebus core: settings, configuration, logging, bus connection, topology, embedded NATS."""

from hivebus.core.bus import jetstream, new_broker
from hivebus.core.clock import Clock, SystemClock
from hivebus.core.config import HivebusConfig, Price, RoleConfig, load_config, parse_config
from hivebus.core.embedded import EmbeddedNats
from hivebus.core.errors import (
    CasConflictError,
    ConfigError,
    CoreError,
    EmbeddedServerError,
    SupersededError,
    UndecodableError,
)
from hivebus.core.logging import bind_ids, configure_logging, get_logger
from hivebus.core.publisher import EventSink, Publisher
from hivebus.core.settings import Settings
from hivebus.core.settle import Settler

__all__ = [
    "CasConflictError",
    "Clock",
    "ConfigError",
    "CoreError",
    "EmbeddedNats",
    "EmbeddedServerError",
    "EventSink",
    "HivebusConfig",
    "Price",
    "Publisher",
    "RoleConfig",
    "Settings",
    "Settler",
    "SupersededError",
    "SystemClock",
    "UndecodableError",
    "bind_ids",
    "configure_logging",
    "get_logger",
    "jetstream",
    "load_config",
    "new_broker",
    "parse_config",
]
