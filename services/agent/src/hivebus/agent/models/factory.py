"""Turn a model route (`anthropic:NAME`, `scripted:FILE`) into a model adapter.

Routes from the role's own configuration are trusted: a scripted path may be absolute.
A route a plan names (`SubTaskAssigned.model`) comes from a submitter or a planner model, so
its scripted path must stay inside the configuration's directory: relative, without `..`,
and resolving there with symlinks followed.
"""

from __future__ import annotations

from pathlib import Path

from hivebus.agent.errors import ModelError
from hivebus.agent.models.base import Model
from hivebus.agent.models.scripted import Script, ScriptedModel, load_script
from hivebus.core import HivebusConfig, Settings

SCRIPT_CACHE = 256
"""Parsed scripts kept per agent process (each run gets its own player over one script)."""


class ModelFactory:
    """Builds models by route; scripted paths are relative to the configuration file."""

    def __init__(self, settings: Settings, config: HivebusConfig) -> None:
        """Keep what building a model needs (the API key stays a secret until used)."""
        self.settings = settings
        self.config = config
        self._scripts: dict[Path, tuple[tuple[int, int], Script]] = {}

    def _script(self, path: Path) -> Script:
        """The parsed script at `path`, parsed again only when the file changed."""
        try:
            info = path.stat()
        except OSError:
            return load_script(path)  # says why it cannot be read
        stamp = (info.st_mtime_ns, info.st_size)
        cached = self._scripts.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        script = load_script(path)
        if len(self._scripts) >= SCRIPT_CACHE:
            self._scripts.clear()
        self._scripts[path] = (stamp, script)
        return script

    def build(self, route: str, *, from_plan: bool = False) -> Model:
        """Return the adapter for `route`, or raise `ModelError` saying what is wrong.

        `from_plan` marks a route a plan supplied (untrusted): see the module docstring.
        """
        provider, sep, name = route.partition(":")
        if not sep or not name:
            raise ModelError(f"model route {route!r} must be 'anthropic:NAME' or 'scripted:FILE'")
        if provider == "scripted":
            return ScriptedModel(route, self._script(self._script_path(route, name, from_plan)))
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

    def _script_path(self, route: str, name: str, from_plan: bool) -> Path:  # noqa: FBT001 - private
        path = Path(name)
        if not from_plan:
            return path if path.is_absolute() else self.config.base_dir / path
        base = self.config.base_dir.resolve()
        if path.is_absolute() or ".." in path.parts:
            raise ModelError(
                f"{route}: a plan may only name a scripted model by a relative path inside "
                f"the configuration's directory ({base}), without '..'"
            )
        resolved = (base / path).resolve()
        if not resolved.is_relative_to(base):
            raise ModelError(
                f"{route}: the script resolves to {resolved}, outside the configuration's "
                f"directory ({base}); a plan may only name scripts inside it"
            )
        return resolved
