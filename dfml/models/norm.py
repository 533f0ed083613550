"""The two BatchNorm regimes.

Pool models (teachers) keep their running statistics and run in eval mode: those statistics are
what inversion matches. The meta-model follows the few-shot convention of MAML and its
successors: every forward pass normalises with the statistics of the batch it is given (the
support set while adapting, the query set while scoring), and nothing is carried from one task to
the next. ``use_batch_stats`` puts a model into that regime by dropping its running buffers, so
that train/eval mode no longer matters and no task's statistics can leak into another's.
"""

from __future__ import annotations

from torch import nn


def use_batch_stats(model: nn.Module) -> nn.Module:
    """Make every BatchNorm layer of ``model`` normalise with batch statistics only (in place).

    Returns:
        ``model`` itself, for chaining.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
    return model


def has_running_stats(model: nn.Module) -> bool:
    """True when some BatchNorm layer of ``model`` still tracks running statistics."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules()
    )
