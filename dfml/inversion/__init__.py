"""Inversion: recover pseudo tasks (synthetic support/query sets) from pre-trained models."""

from __future__ import annotations

from . import losses as losses
from .base import InversionCost as InversionCost
from .base import Inverter as Inverter
from .base import split_task as split_task
from .pixels import PixelInversionConfig as PixelInversionConfig
from .pixels import PixelInverter as PixelInverter

# black-box (zeroth-order) inversion
from .blackbox import BlackBoxGradientError as BlackBoxGradientError
from .blackbox import BlackBoxTeacher as BlackBoxTeacher
from .blackbox import QueryBudget as QueryBudget
from .blackbox import QueryBudgetExceeded as QueryBudgetExceeded
from .zeroth_order import BlackBoxInversionConfig as BlackBoxInversionConfig
from .zeroth_order import BlackBoxInverter as BlackBoxInverter
from .zeroth_order import zo_gradient as zo_gradient

__all__ = ["InversionCost", "Inverter", "PixelInversionConfig", "PixelInverter", "losses", "split_task"]
__all__ += [  # black-box (zeroth-order) inversion
    "BlackBoxGradientError",
    "BlackBoxInversionConfig",
    "BlackBoxInverter",
    "BlackBoxTeacher",
    "QueryBudget",
    "QueryBudgetExceeded",
    "zo_gradient",
]
