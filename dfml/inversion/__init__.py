"""Inversion: recover pseudo tasks (synthetic support/query sets) from pre-trained models."""

from __future__ import annotations

from . import losses as losses
from .base import InversionCost as InversionCost
from .base import Inverter as Inverter
from .base import split_task as split_task
from .pixels import PixelInversionConfig as PixelInversionConfig
from .pixels import PixelInverter as PixelInverter

__all__ = ["InversionCost", "Inverter", "PixelInversionConfig", "PixelInverter", "losses", "split_task"]
