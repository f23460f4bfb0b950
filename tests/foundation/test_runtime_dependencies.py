"""The image carries only what runs: every runtime dependency pyproject.toml declares is imported
by the controller or the executor (a dependency nothing imports belongs in an extra), and every
third-party package they import is declared (the image would fail at import otherwise)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import files, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("controller", "executor")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return {_normalise(m.group(0)) for d in deps if (m := _NAME.match(d))}


def _imported_modules() -> set[str]:
    """Every absolute module path the product imports as written (``from a.b import c``: a.b)."""
    found: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
    return found


def _distributions_of(modules: set[str]) -> set[str]:
    by_top = packages_distributions()
    dists: set[str] = set()
    for module in modules:
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in PRODUCT:
            continue
        owners = by_top.get(top, [])
        if len(owners) > 1:  # a namespace package (azure, gcloud): whoever ships the module
            owners = [d for d in owners if _owns(d, module)]
        dists.update(_normalise(d) for d in owners)
    return dists


def _owns(dist: str, module: str) -> bool:
    path = module.replace(".", "/")
    return any(str(f).startswith((path + "/", path + ".py")) for f in files(dist) or [])


def test_every_runtime_dependency_is_imported_by_the_product() -> None:
    unused = _declared() - _distributions_of(_imported_modules())
    assert not unused, f"declared but never imported by controller/ or executor/: {unused}"


def test_every_third_party_import_of_the_product_is_declared() -> None:
    undeclared = _distributions_of(_imported_modules()) - _declared()
    assert not undeclared, f"imported by the product, not in [project.dependencies]: {undeclared}"
