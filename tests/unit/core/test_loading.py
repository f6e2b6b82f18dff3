"""The one `module:function` loader and the one YAML loader say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.core.loader import load_reference
from hivebus.core.yamlfile import load_yaml


class LoadError(Exception):
    """The caller's own error class."""


def test_a_reference_loads_what_it_names() -> None:
    """`package.module:name` imports the module and returns the attribute."""
    assert load_reference("pathlib:Path", what="tool", error=LoadError) is Path


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("pathlib.Path", "must look like 'package.module:function'"),
        ("pathlib:", "must look like 'package.module:function'"),
        ("no_such_module_x:f", "cannot import tool module 'no_such_module_x'"),
        ("pathlib:NoSuchThing", "module 'pathlib' has no tool 'NoSuchThing'"),
    ],
)
def test_a_bad_reference_raises_the_callers_error(ref: str, message: str) -> None:
    """Each way a reference fails is named, in the caller's error class."""
    with pytest.raises(LoadError, match=message):
        load_reference(ref, what="tool", error=LoadError)


def test_yaml_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    """Unreadable and invalid files raise the caller's error with the path and the cause."""
    with pytest.raises(LoadError, match="cannot read plan"):
        load_yaml(tmp_path / "missing.yaml", what="plan", error=LoadError)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"plan .*bad\.yaml is not valid YAML"):
        load_yaml(bad, what="plan", error=LoadError)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(LoadError, match="is not UTF-8"):
        load_yaml(bad, what="plan", error=LoadError)
