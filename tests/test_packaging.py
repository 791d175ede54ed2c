"""Packaging facts the documentation states stay true (the wheel itself is checked by .ci/run)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).parent.parent


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _minimums():
    pattern = re.compile(r"([A-Za-z0-9_-]+)>=([\w.]+)")
    return dict(pattern.fullmatch(d.replace(" ", "")).groups() for d in _project()["dependencies"])


def test_documented_minimum_versions_match_pyproject():
    minimums = _minimums()
    assert set(minimums) == {"jax", "optax"}
    for page in ("README.md", "docs/getting_started.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        for name, version in minimums.items():
            assert f"{name}>={version}" in text, f"{page} does not say {name}>={version}"


def test_license_ships_with_the_package():
    project = _project()
    assert project["license"] == "Apache-2.0"
    assert "LICENSE" in project["license-files"]
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")[:200]


def test_version_has_a_changelog_entry():
    import lrr_optax

    assert _project()["version"] == lrr_optax.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## {lrr_optax.__version__}" in changelog
