"""Inversion: recover pseudo tasks (synthetic support/query sets) from pre-trained models."""

from __future__ import annotations

from . import losses as losses
from .base import InversionCost as InversionCost
from .base import Inverter as Inverter
from .base import split_task as split_task
from .pixels import PixelInversionConfig as PixelInversionConfig
from .pixels import PixelInverter as PixelInverter

__all__ = ["InversionCost", "Inverter", "PixelInversionConfig", "PixelInverter", "losses", "split_task"]

# pixel bank (PURER-style memory of learnable inputs, episode curriculum, batched refinement)
from .bank import AdaptedStudent as AdaptedStudent  # noqa: E402
from .bank import PixelBank as PixelBank  # noqa: E402
from .bank import PixelBankConfig as PixelBankConfig  # noqa: E402

__all__ += ["AdaptedStudent", "PixelBank", "PixelBankConfig"]
from .grid import image_grid as image_grid  # noqa: E402
from .grid import invert_pool as invert_pool  # noqa: E402

__all__ += ["image_grid", "invert_pool"]
