"""Inversion: recover pseudo tasks (synthetic support/query sets) from pre-trained models."""

from __future__ import annotations

from .pixels import InversionCost as InversionCost
from .pixels import PixelInversionConfig as PixelInversionConfig
from .pixels import PixelInverter as PixelInverter

__all__ = ["InversionCost", "PixelInversionConfig", "PixelInverter"]
