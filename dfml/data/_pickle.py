"""Reading the pickled dataset files (CIFAR-100 pickles, miniImageNet caches) without running code.

``pickle.load`` on a file from the internet can execute arbitrary code. These files only ever hold
dicts, lists, strings, numbers and numpy arrays, so the unpickler below refuses every other global.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load global {module}.{name}: dataset pickles hold only arrays, lists and dicts"
        )


def load_data_pickle(path: Path) -> Any:
    """Unpickle a data file (Python 2 pickles included, read with ``latin1``), allowing only data types.

    Raises:
        ValueError: the file is not a pickle of plain data (corrupt, truncated or holding code).
    """
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise ValueError(f"{path} is not a readable dataset pickle ({type(err).__name__}: {err})") from err
