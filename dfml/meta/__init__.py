"""Meta-learning: the functional inner loop, MAML and ProtoNet learners, baseline model builders."""

from __future__ import annotations

from .baselines import average_models as average_models
from .baselines import random_init_model as random_init_model
from .inner import functional_forward as functional_forward
from .inner import inner_update as inner_update
from .learner import Learner as Learner
from .maml import MAML as MAML
from .protonet import ProtoNet as ProtoNet
from .protonet import prototype_logits as prototype_logits
from .protonet import prototypes as prototypes
from .stream import BankStream as BankStream
from .stream import MetaUpdate as MetaUpdate
from .stream import TaskStream as TaskStream

__all__ = [
    "MAML",
    "BankStream",
    "MetaUpdate",
    "TaskStream",
    "Learner",
    "ProtoNet",
    "average_models",
    "functional_forward",
    "inner_update",
    "prototype_logits",
    "prototypes",
    "random_init_model",
]
