"""The data-free loop, end to end: configuration to parts (by registry), the task stream, rewards,
teacher caching and input-domain conversion, the meta-training loop and its checkpoints.

Layering: this package uses the parts (``inversion``, ``selection``, ``memory``, ``meta``) and
``eval``; ``recipes`` and ``experiment`` use it; ``meta`` never imports it.
"""

from __future__ import annotations

from .bank import SyntheticBank as SyntheticBank
from .bank import build_bank as build_bank
from .bank import check_bank as check_bank
from .base import BankStream as BankStream
from .base import StreamExhausted as StreamExhausted
from .base import TaskStream as TaskStream
from .build import DataFreeContext as DataFreeContext
from .build import build_inverter as build_inverter
from .build import build_learner as build_learner
from .build import build_selector as build_selector
from .build import build_update as build_update
from .build import run_datafree as run_datafree
from .config import BlackBoxAccessConfig as BlackBoxAccessConfig
from .config import DataFreeConfig as DataFreeConfig
from .rewards import REWARDS as REWARDS
from .rewards import Reward as Reward
from .stream import DataFreeStream as DataFreeStream
from .stream import StreamConfig as StreamConfig
from .tasks import TaskAugment as TaskAugment
from .tasks import restrict_task as restrict_task
from .teachers import Teachers as Teachers
from .trainer import MetaTrainer as MetaTrainer
from .trainer import TrainConfig as TrainConfig

__all__ = [
    "REWARDS",
    "BankStream",
    "BlackBoxAccessConfig",
    "DataFreeConfig",
    "DataFreeContext",
    "DataFreeStream",
    "MetaTrainer",
    "Reward",
    "StreamConfig",
    "StreamExhausted",
    "SyntheticBank",
    "TaskAugment",
    "TaskStream",
    "Teachers",
    "TrainConfig",
    "build_bank",
    "build_inverter",
    "build_learner",
    "build_selector",
    "build_update",
    "check_bank",
    "run_datafree",
]
