"""What a published package promises: every import declared, the license stated and shipped,
type information marked, and no test files in the sdist that could not run there."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _imported_top_level_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO / "tunnelauth").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = {_requirement_name(r) for r in PROJECT["dependencies"]}
    distributions = packages_distributions()
    undeclared = {}
    for module, where in _imported_top_level_modules().items():
        if module in sys.stdlib_module_names or module in ("tunnelauth", "__future__"):
            continue
        names = {d.lower() for d in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(where)
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_the_license_is_an_spdx_expression_and_its_text_ships() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 tunnelauth developers" in text
    assert "License :: " not in " ".join(PROJECT["classifiers"])  # superseded by the expression
    requires = " ".join(PYPROJECT["build-system"]["requires"])
    assert re.search(r"setuptools>=(7[7-9]|[89]\d)", requires), requires


def test_the_package_is_marked_typed() -> None:
    assert (REPO / "tunnelauth" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["tunnelauth"]
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_the_sdist_carries_no_test_suite() -> None:
    # The suite needs the root-only lab and a clone (CONTRIBUTING.md): none of it in the sdist.
    manifest = (REPO / "MANIFEST.in").read_text().split("\n")
    for folder in ("tests", "bench", "docker", ".ci"):
        assert f"prune {folder}" in manifest, folder


def test_the_project_urls_are_given() -> None:
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(PROJECT["urls"])
