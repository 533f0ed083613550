"""Model builders of the two reference baselines: a random initialisation and the pool average.

Both are then scored like any meta-model: fine-tuned on each meta-test support set
(``dfml.eval.evaluate``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["average_models", "random_init_model"]

logger = logging.getLogger(__name__)


def random_init_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model with its default random initialisation, deterministically.

    ``build()`` runs under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``, so the
    same seed gives the same weights and the caller's global RNG state is left untouched.

    Args:
        build: a zero-argument factory, e.g. ``lambda: Conv4(n_way=5)``.
        seed: the seed (an int).

    Returns:
        The freshly built model.

    Raises:
        TypeError: ``build`` does not return an ``nn.Module`` or ``seed`` is not an int.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build() must return an nn.Module, got {type(model).__name__}")
    return model


def average_models(models: Iterable[nn.Module]) -> nn.Module:
    """Parameter average of same-architecture models (the "Average" baseline), one model at a time.

    Every floating-point entry of the state dict is averaged, BatchNorm running statistics
    included; integer buffers (``num_batches_tracked``) are taken from the first model. The
    running statistics only matter for eval-mode use of the result: as a meta-model it is
    scored with batch statistics (``use_batch_stats``, applied by ``dfml.eval.evaluate`` and the
    learners), which drops them.

    The models are consumed as a running sum in float64 (complex128 for complex entries), then
    divided by their number and cast back: memory holds the first model, the sum and the model
    being added, whatever their number, so a generator that loads models lazily (e.g.
    ``(pool.load(i) for i in ids)``) averages a pool of thousands in the memory of a few. The
    result equals ``torch.stack(entries).mean(0)`` to float32 rounding (the float64 sum is the
    more accurate of the two).

    Args:
        models: one or more models of the same class with identical state-dict keys, shapes and
            dtypes, any iterable (e.g. ``[pool.load(i) for i in ids]`` or a generator); they are
            not modified.

    Returns:
        A new model (a deep copy of the first) holding the averages.

    Raises:
        ValueError: no model, or models whose class, keys, shapes or dtypes differ (the message
            names the first difference).
    """
    first: nn.Module | None = None
    ref: dict[str, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {}
    n = 0
    for i, m in enumerate(models):
        state = m.state_dict()
        if first is None:
            first, ref = m, state
            sums = {k: v.detach().to(torch.promote_types(v.dtype, torch.float64), copy=True)
                    for k, v in state.items() if v.is_floating_point() or v.is_complex()}
        else:
            if type(m) is not type(first):
                raise ValueError(
                    f"cannot average models of different classes: models[0] is {type(first).__name__}, "
                    f"models[{i}] is {type(m).__name__}; average only models of one architecture"
                )
            _check_same_layout(ref, state, i)
            for key, total in sums.items():
                total.add_(state[key].detach())
        n += 1
    if first is None:
        raise ValueError("average_models needs at least one model, got an empty sequence")
    averaged = {key: (sums[key] / n).to(value.dtype) if key in sums else value.clone() for key, value in ref.items()}
    out = copy.deepcopy(first)
    out.load_state_dict(averaged)
    logger.debug("averaged %d models of class %s", n, type(first).__name__)
    return out


def _check_same_layout(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor], i: int) -> None:
    missing = [k for k in ref if k not in other]
    extra = [k for k in other if k not in ref]
    if missing or extra:
        key = (missing or extra)[0]
        where = f"models[0] but not models[{i}]" if missing else f"models[{i}] but not models[0]"
        raise ValueError(
            f"cannot average: state-dict key {key!r} is in {where}; average only models of one architecture"
        )
    for key, a in ref.items():
        b = other[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"cannot average: {key!r} is {tuple(a.shape)} {a.dtype} in models[0] but {tuple(b.shape)} "
                f"{b.dtype} in models[{i}]; average only models of one architecture (and one dtype)"
            )
