"""Load a script of ``benchmarks/`` as a module, so tests can call its functions and ``main``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, registered as ``dfml_benchmarks_<name>``.

    The module is put in ``sys.modules`` before it runs: dataclasses look their module up there
    while the class is built.
    """
    spec = importlib.util.spec_from_file_location(f"dfml_benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
