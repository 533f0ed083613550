"""Meta-learning: the functional inner loop, MAML and ProtoNet learners, the distilling MAML learner,
regularised meta-updates (implicit gradient alignment, group gradient regularisation), baseline model builders."""

from __future__ import annotations

from .alignment import AlignmentConfig as AlignmentConfig
from .alignment import GradientAlignment as GradientAlignment
from .alignment import sequential_displacement as sequential_displacement
from .baselines import average_models as average_models
from .baselines import random_init_model as random_init_model
from .distill import DistillationConfig as DistillationConfig
from .distill import DistillationMAML as DistillationMAML
from .distill import attach_teacher_logits as attach_teacher_logits
from .distill import teacher_logits as teacher_logits
from .grouping import GroupRegularization as GroupRegularization
from .grouping import GroupRegularizationConfig as GroupRegularizationConfig
from .grouping import group_regularized_gradient as group_regularized_gradient
from .inner import functional_forward as functional_forward
from .inner import inner_update as inner_update
from .learner import Learner as Learner
from .maml import MAML as MAML
from .protonet import ProtoNet as ProtoNet
from .protonet import prototype_logits as prototype_logits
from .protonet import prototypes as prototypes
from .stream import BankStream as BankStream
from .stream import MetaUpdate as MetaUpdate
from .stream import StreamExhausted as StreamExhausted
from .stream import TaskStream as TaskStream

__all__ = [
    "AlignmentConfig",
    "BankStream",
    "DistillationConfig",
    "DistillationMAML",
    "GradientAlignment",
    "GroupRegularization",
    "GroupRegularizationConfig",
    "Learner",
    "MAML",
    "MetaUpdate",
    "ProtoNet",
    "StreamExhausted",
    "TaskStream",
    "attach_teacher_logits",
    "average_models",
    "functional_forward",
    "group_regularized_gradient",
    "inner_update",
    "prototype_logits",
    "prototypes",
    "random_init_model",
    "sequential_displacement",
    "teacher_logits",
]
