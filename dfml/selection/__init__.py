"""Model selection: which pool models to invert at each step (uniform, group-aware, learnt reliability)."""

from __future__ import annotations

from .base import SELECTORS as SELECTORS
from .base import Selector as Selector
from .base import UniformSelector as UniformSelector
from .base import build_selector as build_selector
from .fisher import cosine_dissimilarity as cosine_dissimilarity
from .fisher import fisher_embedding as fisher_embedding
from .fisher import fisher_embeddings as fisher_embeddings
from .groups import GroupSelector as GroupSelector
from .plackett_luce import gumbel_top_k as gumbel_top_k
from .plackett_luce import plackett_luce_log_prob as plackett_luce_log_prob
from .reliability import ReliabilityConfig as ReliabilityConfig
from .reliability import ReliabilityWeigher as ReliabilityWeigher
from .rewards import accuracy_improvement_reward as accuracy_improvement_reward
from .rewards import improvement_reward as improvement_reward
from .rewards import real_validation_reward as real_validation_reward
from .rewards import tasks_from_other_models as tasks_from_other_models
from .spectral import spectral_clustering as spectral_clustering

__all__ = [
    "SELECTORS",
    "GroupSelector",
    "ReliabilityConfig",
    "ReliabilityWeigher",
    "Selector",
    "UniformSelector",
    "accuracy_improvement_reward",
    "build_selector",
    "cosine_dissimilarity",
    "fisher_embedding",
    "fisher_embeddings",
    "gumbel_top_k",
    "improvement_reward",
    "plackett_luce_log_prob",
    "real_validation_reward",
    "spectral_clustering",
    "tasks_from_other_models",
]
