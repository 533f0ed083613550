"""dfml: data-free meta-learning from a pool of pre-trained models."""

from __future__ import annotations

__version__ = "0.1.0"

from .export import load_exported as load_exported
from .registry import Registry as Registry
from .types import Params as Params
from .types import Task as Task
from .types import TaskSource as TaskSource

__all__ = ["Params", "Registry", "Task", "TaskSource", "__version__", "load_exported"]
