"""The package's layers, read from the import statements of every module (parsed with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "dfml"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``dfml`` module ``path`` imports (``from .. import x`` counts as ``dfml.x``), absolute names."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dfml"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "dfml":
                continue
            found.add(module)
            if not node.module:  # from .. import distributed
                found |= {f"{module}.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> str:
    """The subpackage (or top-level module) of ``module``: ``dfml.meta.maml`` -> ``meta``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _uses(package: str) -> dict[str, set[str]]:
    """``{imported module: importing files}`` for every file of ``dfml/<package>`` (a dotted module too)."""
    path = ROOT.joinpath(*package.split("."))
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    out: dict[str, set[str]] = {}
    for f in files:
        for m in _imports(f):
            out.setdefault(m, set()).add(str(f.relative_to(ROOT.parent)))
    return out


ABOVE_META = {"datafree", "recipes", "eval", "experiment", "cli", "export", "demo", "plots", "runs", "selection",
              "memory", "pool", "data", "inversion"}


def test_meta_holds_algorithms_and_imports_nothing_above_models_and_types():
    bad = {m: f for m, f in _uses("meta").items()
           if _layer(m) in ABOVE_META and m != "dfml.inversion.losses"}
    assert not bad, f"dfml.meta imports from above its layer: {bad}"


def test_the_losses_meta_may_use_are_a_leaf():
    assert not {m for m in _uses("inversion.losses") if m.startswith("dfml")}


@pytest.mark.parametrize("package,forbidden", [
    ("models", {"data", "pool", "inversion", "memory", "selection", "meta", "datafree", "eval", "recipes",
                "experiment", "cli", "commands", "export", "runs"}),
    ("data", {"models", "pool", "inversion", "memory", "selection", "meta", "datafree", "eval", "recipes",
              "experiment", "cli", "commands", "export", "runs"}),
    ("pool", {"inversion", "memory", "selection", "meta", "datafree", "eval", "recipes", "experiment", "cli",
              "commands", "export"}),
    ("eval", {"datafree", "recipes", "experiment", "cli", "commands"}),
    ("inversion", {"meta", "datafree", "eval", "recipes", "experiment", "cli", "commands"}),
    ("selection", {"meta", "datafree", "eval", "recipes", "experiment", "cli", "commands", "inversion"}),
    ("memory", {"meta", "datafree", "eval", "recipes", "experiment", "cli", "commands", "inversion"}),
    ("datafree", {"recipes", "experiment", "cli", "commands"}),
])
def test_lower_layers_import_nothing_above_them(package, forbidden):
    bad = {m: f for m, f in _uses(package).items() if _layer(m) in forbidden}
    assert not bad, f"dfml.{package} imports from above its layer: {bad}"


def test_meta_and_eval_do_not_import_each_other_both_ways():
    assert not any(_layer(m) == "eval" for m in _uses("meta"))


def test_the_table_of_moved_fields_is_a_leaf_that_config_handling_may_use():
    assert not {m for m in _uses("upgrade") if m.startswith("dfml")}  # dfml.config and dfml.coerce import it


def test_nothing_in_dfml_imports_benchmarks():
    for f in ROOT.rglob("*.py"):
        tree = ast.parse(f.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        assert not [n for n in names if n.split(".")[0] == "benchmarks"], f


def test_every_file_of_dfml_stays_under_400_lines():
    long = {str(f.relative_to(ROOT.parent)): n for f in ROOT.rglob("*.py")
            if (n := len(f.read_text().splitlines())) >= 400}
    assert not long, f"files of 400 lines or more: {long}; split them by responsibility (STYLE.md: 300 lines a file, soft)"


def test_the_import_parser_resolves_relative_imports():
    assert "dfml.types" in _imports(ROOT / "meta" / "maml.py")
    assert "dfml.distributed" in _imports(ROOT / "meta" / "parallel.py")
