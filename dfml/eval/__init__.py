"""Meta-test evaluation: the fine-tune / ProtoNet protocol, inversion calibration, 95% intervals, paired comparisons."""

from __future__ import annotations

from .calibration import CalibrationConfig as CalibrationConfig
from .calibration import calibrate as calibrate
from .config import EvalConfig as EvalConfig
from .protocol import METHODS as METHODS
from .protocol import evaluate as evaluate
from .sharded import evaluate_sharded as evaluate_sharded
from .protocol import feature_extractor as feature_extractor
from .protocols import PROTOCOLS as PROTOCOLS
from .protocols import Protocol as Protocol
from .protocols import get_protocol as get_protocol
from .stats import EvalResult as EvalResult
from .stats import mean_ci95 as mean_ci95
from .stats import paired as paired

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "CalibrationConfig",
    "EvalConfig",
    "EvalResult",
    "Protocol",
    "calibrate",
    "evaluate",
    "evaluate_sharded",
    "feature_extractor",
    "get_protocol",
    "mean_ci95",
    "paired",
]
