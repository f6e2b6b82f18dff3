"""`ModelFactory`: a model route from configuration becomes a model adapter, or a clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hivebus.agent.errors import ModelError, ScriptError
from hivebus.agent.models.anthropic import AnthropicModel
from hivebus.agent.models.factory import ModelFactory
from hivebus.agent.models.scripted import ScriptedModel
from hivebus.core import HivebusConfig, RoleConfig, Settings

KEY_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "HIVEBUS_ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "HIVEBUS_ANTHROPIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without an Anthropic key or base URL in the environment."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def factory(base_dir: Path) -> ModelFactory:
    """A factory with settings read from the (cleaned) environment and a one-role configuration."""
    config = HivebusConfig(
        base_dir=base_dir, roles={"writer": RoleConfig(system="s", model="scripted:w.yaml")}
    )
    return ModelFactory(Settings(), config)


def test_anthropic_route_without_key_says_which_variable_to_set(tmp_path: Path) -> None:
    """`anthropic:NAME` without a key is a `ModelError` saying to set ANTHROPIC_API_KEY."""
    with pytest.raises(ModelError, match="set ANTHROPIC_API_KEY") as caught:
        factory(tmp_path).build("anthropic:claude-x")
    assert "anthropic:claude-x" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize("variable", ["ANTHROPIC_API_KEY", "HIVEBUS_ANTHROPIC_API_KEY"])
def test_anthropic_route_with_key_builds_the_sdk_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """With a key (either variable) and a base URL, the route builds an `AnthropicModel`."""
    monkeypatch.setenv(variable, "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    built = factory(tmp_path).build("anthropic:claude-x")
    assert isinstance(built, AnthropicModel)
    assert (built.route, built.model_name) == ("anthropic:claude-x", "claude-x")
    assert built.client.api_key == "sk-test"
    assert str(built.client.base_url).startswith("http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("route", "provider"),
    [("openai:gpt-x", "'openai'"), ("Anthropic:x", "'Anthropic'"), (":x", "''")],
)
def test_unknown_provider_is_a_model_error(tmp_path: Path, route: str, provider: str) -> None:
    """A provider other than `anthropic` or `scripted` is a `ModelError` naming it and the route."""
    with pytest.raises(ModelError) as caught:
        factory(tmp_path).build(route)
    assert f"unknown model provider {provider} in {route!r}" in str(caught.value)


@pytest.mark.parametrize("route", ["claude-x", "anthropic:", "scripted:", ""])
def test_malformed_route_says_what_a_route_looks_like(tmp_path: Path, route: str) -> None:
    """A route without a provider and a name is a `ModelError` showing the expected forms."""
    with pytest.raises(ModelError) as caught:
        factory(tmp_path).build(route)
    assert "must be 'anthropic:NAME' or 'scripted:FILE'" in str(caught.value)


def test_scripted_route_is_relative_to_the_configuration(tmp_path: Path) -> None:
    """`scripted:FILE` is read relative to the configuration file's directory."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "w.yaml").write_text("- text: hi\n", encoding="utf-8")
    built = factory(tmp_path).build("scripted:scripts/w.yaml")
    assert isinstance(built, ScriptedModel)
    assert built.route == "scripted:scripts/w.yaml"
    assert built.script.turns[0].text == "hi"


def test_scripted_route_with_a_missing_file_is_a_script_error(tmp_path: Path) -> None:
    """A scripted route whose file does not exist is a `ScriptError` naming the path."""
    with pytest.raises(ScriptError, match="cannot read script") as caught:
        factory(tmp_path).build("scripted:missing.yaml")
    assert str(tmp_path / "missing.yaml") in str(caught.value)


# --- routes a plan supplies -------------------------------------------------------------------


def write_script(path: Path) -> Path:
    """Write a one-turn script at `path` (creating its folder) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("- text: hi\n", encoding="utf-8")
    return path


def test_a_plan_may_name_a_script_inside_the_configuration_directory(tmp_path: Path) -> None:
    """A plan's relative scripted path inside the configuration's directory builds the model."""
    write_script(tmp_path / "scripts" / "w.yaml")
    built = factory(tmp_path).build("scripted:scripts/w.yaml", from_plan=True)
    assert isinstance(built, ScriptedModel)
    assert built.script.turns[0].text == "hi"


@pytest.mark.parametrize(
    ("route", "says"),
    [
        ("scripted:{outside}", "a plan may only name a scripted model by a relative path"),
        ("scripted:../outside/w.yaml", "without '..'"),
        ("scripted:scripts/../../outside/w.yaml", "without '..'"),
        ("scripted:link/w.yaml", "outside the configuration's directory"),
    ],
    ids=["absolute", "dot-dot", "dot-dot-inside", "symlink-out"],
)
def test_a_plan_cannot_name_a_script_outside_the_configuration_directory(
    tmp_path: Path, route: str, says: str
) -> None:
    """A plan's scripted path that is absolute, has '..' or leaves by a symlink is refused."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    outside = write_script(tmp_path / "outside" / "w.yaml")
    (config_dir / "link").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(ModelError, match=re.escape(says)) as caught:
        factory(config_dir).build(route.format(outside=outside), from_plan=True)
    assert not isinstance(caught.value, ScriptError)  # refused before any file was read
    assert not caught.value.retryable


def test_the_roles_own_configuration_may_name_an_absolute_script(tmp_path: Path) -> None:
    """A route from the role's configuration (trusted) may still be an absolute path."""
    outside = write_script(tmp_path / "outside" / "w.yaml")
    (tmp_path / "config").mkdir()
    built = factory(tmp_path / "config").build(f"scripted:{outside}")
    assert isinstance(built, ScriptedModel)
