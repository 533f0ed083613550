"""A run's meta-model taken elsewhere: one self-contained file (``dfml export``), loaded back with plain
``torch.load(..., weights_only=True)`` or :func:`load_exported`, and scored on fixed episodes
(``dfml eval --model``). The file's fields: :mod:`dfml.export.file`."""

from __future__ import annotations

from .file import FORMAT as FORMAT
from .file import FORMAT_VERSION as FORMAT_VERSION
from .file import export_meta_model as export_meta_model
from .file import exported_dict as exported_dict
from .file import load_exported as load_exported
from .file import load_run_model as load_run_model
from .file import read_export as read_export
from .file import run_meta_model as run_meta_model
from .score import score_exported as score_exported

__all__ = ["FORMAT", "FORMAT_VERSION", "export_meta_model", "exported_dict", "load_exported", "load_run_model",
           "read_export", "run_meta_model", "score_exported"]
