"""Model pools: the manifest, lazy loading, pretraining, importing, corruption and toy pools."""

from __future__ import annotations

from .corrupt import UNTRUSTWORTHY_KINDS as UNTRUSTWORTHY_KINDS
from .corrupt import add_untrustworthy as add_untrustworthy
from .importer import import_official_pool as import_official_pool
from .manifest import MANIFEST_NAME as MANIFEST_NAME
from .manifest import TRUST_LEVELS as TRUST_LEVELS
from .manifest import PoolEntry as PoolEntry
from .manifest import PoolManifest as PoolManifest
from .merge import merge_pools as merge_pools
from .merge import subset_pool as subset_pool
from .pool import ModelPool as ModelPool
from .pretrain import PretrainConfig as PretrainConfig
from .pretrain import assign_architectures as assign_architectures
from .pretrain import pretrain_pool as pretrain_pool
from .toy import build_toy_pool as build_toy_pool
from .training import TrainResult as TrainResult
from .training import train_classifier as train_classifier

__all__ = [
    "MANIFEST_NAME",
    "TRUST_LEVELS",
    "UNTRUSTWORTHY_KINDS",
    "ModelPool",
    "PoolEntry",
    "PoolManifest",
    "PretrainConfig",
    "TrainResult",
    "add_untrustworthy",
    "assign_architectures",
    "build_toy_pool",
    "import_official_pool",
    "merge_pools",
    "pretrain_pool",
    "subset_pool",
    "train_classifier",
]
