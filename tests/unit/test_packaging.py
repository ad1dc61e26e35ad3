"""pyproject.toml lists every package: a directory with an __init__.py under archc/ or
backends/ that the list misses would be left out of a non-editable install."""

from __future__ import annotations

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_package_is_listed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for root, prefix in (("archc", "archc"), ("backends", "archc.backends")):
        for init in (REPO / root).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / root).parts
            found.add(".".join((prefix, *rel)))
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages: {missing}"
    assert not sorted(listed - found - {"archc.grammar"}), sorted(listed - found)
