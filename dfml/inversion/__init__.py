"""Inversion: recover pseudo tasks (synthetic support/query sets) from pre-trained models.

White-box inverters optimise pixels (:class:`PixelInverter`, the persistent :class:`PixelBankInverter`) or
generators; the black-box inverter sees only the teacher's outputs through a counted, budgeted
:class:`BlackBoxTeacher` and estimates gradients by zeroth-order differences. All take their
losses from :mod:`dfml.inversion.losses` and account for their cost in :class:`InversionCost`.
"""

from __future__ import annotations

from . import losses as losses
from .bank import AdaptedStudent as AdaptedStudent
from .bank import PixelBank as PixelBank
from .bank import PixelBankInverter as PixelBankInverter
from .bank import PixelBankConfig as PixelBankConfig
from .base import INVERTERS as INVERTERS
from .base import InversionCost as InversionCost
from .base import Inverter as Inverter
from .base import split_task as split_task
from .batched import BatchedGeneratorInverter as BatchedGeneratorInverter
from .batched import model_generators as model_generators
from .blackbox import BlackBoxGradientError as BlackBoxGradientError
from .blackbox import BlackBoxPool as BlackBoxPool
from .blackbox import BlackBoxTeacher as BlackBoxTeacher
from .blackbox import QueryBudget as QueryBudget
from .blackbox import QueryBudgetExceeded as QueryBudgetExceeded
from .domains import DomainInverters as DomainInverters
from .generator import GeneratorInversionConfig as GeneratorInversionConfig
from .generator import GeneratorInverter as GeneratorInverter
from .grid import image_grid as image_grid
from .grid import invert_pool as invert_pool
from .losses import DiffAugment as DiffAugment
from .metagen import MetaGeneratorConfig as MetaGeneratorConfig
from .metagen import MetaGeneratorInverter as MetaGeneratorInverter
from .pixels import PixelInversionConfig as PixelInversionConfig
from .pixels import PixelInverter as PixelInverter
from .blackbox_inverter import BlackBoxInversionConfig as BlackBoxInversionConfig
from .blackbox_inverter import BlackBoxInverter as BlackBoxInverter
from .zeroth_order import zo_gradient as zo_gradient

__all__ = [
    "INVERTERS",
    "AdaptedStudent",
    "BatchedGeneratorInverter",
    "BlackBoxGradientError",
    "BlackBoxInversionConfig",
    "BlackBoxInverter",
    "BlackBoxPool",
    "BlackBoxTeacher",
    "DiffAugment",
    "DomainInverters",
    "GeneratorInversionConfig",
    "GeneratorInverter",
    "InversionCost",
    "Inverter",
    "MetaGeneratorConfig",
    "MetaGeneratorInverter",
    "PixelBank",
    "PixelBankInverter",
    "PixelBankConfig",
    "PixelInversionConfig",
    "PixelInverter",
    "QueryBudget",
    "QueryBudgetExceeded",
    "image_grid",
    "invert_pool",
    "losses",
    "model_generators",
    "split_task",
    "zo_gradient",
]
