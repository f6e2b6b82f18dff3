"""Turn a model route (`anthropic:NAME`, `scripted:FILE`) into a model adapter."""

from __future__ import annotations

from pathlib import Path

from hivebus.agent.errors import ModelError
from hivebus.agent.models.base import Model
from hivebus.agent.models.scripted import ScriptedModel, load_script
from hivebus.core import HivebusConfig, Settings


class ModelFactory:
    """Builds models by route; scripted paths are relative to the configuration file."""

    def __init__(self, settings: Settings, config: HivebusConfig) -> None:
        """Keep what building a model needs (the API key stays a secret until used)."""
        self.settings = settings
        self.config = config

    def build(self, route: str) -> Model:
        """Return the adapter for `route`, or raise `ModelError` saying what is wrong."""
        provider, sep, name = route.partition(":")
        if not sep or not name:
            raise ModelError(f"model route {route!r} must be 'anthropic:NAME' or 'scripted:FILE'")
        if provider == "scripted":
            path = Path(name)
            if not path.is_absolute():
                path = self.config.base_dir / path
            return ScriptedModel(route, load_script(path))
        if provider == "anthropic":
            # Imported here: the SDK takes over a second to import, and most runs never need it.
            from hivebus.agent.models.anthropic import AnthropicModel  # noqa: PLC0415

            key = self.settings.anthropic_api_key
            if key is None:
                raise ModelError(
                    f"{route} needs an API key: "
                    "set ANTHROPIC_API_KEY (or HIVEBUS_ANTHROPIC_API_KEY)"
                )
            return AnthropicModel(
                route,
                name,
                api_key=key.get_secret_value(),
                base_url=self.settings.anthropic_base_url,
            )
        raise ModelError(f"unknown model provider {provider!r} in {route!r}")
