"""Meta-learning: the functional inner loop, MAML and ProtoNet learners, the distilling MAML learner,
regularised meta-updates (implicit gradient alignment, group gradient regularisation), baseline model builders.

Algorithms only: this package imports nothing above ``dfml.models`` and ``dfml.types`` (and the pure
loss functions of ``dfml.inversion.losses``); the loop that feeds it tasks is :mod:`dfml.datafree`."""

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
from .learner import LEARNERS as LEARNERS
from .update import UPDATES as UPDATES
from .update import LearnerStep as LearnerStep
from .update import MetaUpdate as MetaUpdate
from .update import default_update as default_update

__all__ = [
    "LEARNERS",
    "UPDATES",
    "AlignmentConfig",
    "DistillationConfig",
    "DistillationMAML",
    "GradientAlignment",
    "GroupRegularization",
    "GroupRegularizationConfig",
    "Learner",
    "LearnerStep",
    "MAML",
    "MetaUpdate",
    "ProtoNet",
    "attach_teacher_logits",
    "average_models",
    "default_update",
    "functional_forward",
    "group_regularized_gradient",
    "inner_update",
    "prototype_logits",
    "prototypes",
    "random_init_model",
    "sequential_displacement",
    "teacher_logits",
]
