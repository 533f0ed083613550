"""The two baselines every DFML paper reports.

* ``random``: a randomly initialised meta-model, only fine-tuned at meta-test (initialised as
  ``eval.protocol`` says: under ``standard``, the papers' Conv4 initialisation and a zero head bias).
* ``average``: the parameter average of the pool's models that share the meta-model's architecture
  (all of them in a same-architecture pool; ``results.json`` says how many), fine-tuned at
  meta-test. Teachers' heads disagree on what output ``k`` means, so the averaged head is a
  starting point for fine-tuning like any other; BN running statistics are dropped because the
  meta-model normalises with batch statistics (see :mod:`dfml.models.norm`).

In a heterogeneous pool ``average`` keeps its place in every table rather than refusing: it is the
average of the models a practitioner could average (those of the meta-model's architecture), and
``results.json`` (``info.average``) records which ones, so the row is never mistaken for an average
of the whole pool.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

from torch import nn

from ..eval.protocols import get_protocol, zero_head_bias
from ..meta.baselines import average_models
from ..models.norm import use_batch_stats
from .base import META_MODEL_READS, RecipeContext, RecipeSpec, describe_architecture, register_recipe

logger = logging.getLogger(__name__)


@register_recipe("random", RecipeSpec(reads=META_MODEL_READS))
def random_recipe(ctx: RecipeContext) -> nn.Module:
    """Random initialisation (seeded by ``train.seed``), as ``eval.protocol`` says.

    Under ``standard`` (the papers' code) the head's bias is zeroed after the protocol's
    initialisation; under ``dfml-2025`` the model is left as built.
    """
    model = ctx.build_meta_model(ctx.train.seed)
    if get_protocol(ctx.protocol).random_head_bias == "zero":
        zero_head_bias(model)
    return use_batch_stats(model)


@register_recipe("average", RecipeSpec(reads=META_MODEL_READS, pool_classes="equal"))
def average_recipe(ctx: RecipeContext) -> nn.Module:
    """Parameter average of the pool's models that share the meta-model's architecture (see :func:`pool_average`)."""
    return use_batch_stats(pool_average(ctx))


def pool_average(ctx: RecipeContext) -> nn.Module:
    """Parameter average of the pool's models that share the meta-model's architecture.

    In a heterogeneous pool only models of the meta-model's architecture (same class, same
    parameter names and shapes) can be averaged: the others are left out, and
    ``info["average"]`` records which models were averaged, out of how many.

    Raises:
        ValueError: the pool's models predict another number of classes than ``train.n_way``, or
            no pool model has the meta-model's architecture (names the pool's architectures and
            ``train.meta_arch``).
    """
    meta = ctx.build_meta_model(ctx.train.seed)
    arch, kwargs = ctx.meta_architecture()
    n_way = {e.n_way for e in ctx.pool.entries}
    if n_way != {ctx.train.n_way}:
        raise ValueError(
            f"the pool's models have {sorted(n_way)} outputs but meta-test tasks are {ctx.train.n_way}-way; "
            "set train.n_way to the pool's n_way"
        )
    shapes = {k: v.shape for k, v in meta.state_dict().items()}
    members: list[int] = []

    def same_architecture() -> Iterator[nn.Module]:  # loaded one at a time: memory stays flat in the pool's size
        for i, e in enumerate(ctx.pool.entries):
            if e.arch != arch:
                continue
            model = ctx.pool.load(i, device="cpu")
            if type(model) is type(meta) and {k: v.shape for k, v in model.state_dict().items()} == shapes:
                members.append(i)
                yield model

    models = same_architecture()
    first = next(models, None)
    if first is None:
        archs = sorted({describe_architecture(e.arch, e.arch_kwargs) for e in ctx.pool.entries})
        raise ValueError(
            f"no pool model has the meta-model's architecture {describe_architecture(arch, kwargs)}, so there is "
            f"nothing to average; the pool holds {'; '.join(archs)}. Set train.meta_arch (and "
            "train.meta_arch_kwargs) to one of them"
        )
    model = average_models(itertools.chain([first], models))
    ctx.info["average"] = {"models": members, "averaged": len(members), "pool_size": len(ctx.pool),
                           "architecture": describe_architecture(arch, kwargs)}
    if len(members) < len(ctx.pool):
        logger.info("average: %d of %d pool models share the meta-model's architecture %s", len(members),
                    len(ctx.pool), describe_architecture(arch, kwargs))
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def initial_meta_model(ctx: RecipeContext, seed: int) -> nn.Module:
    """The meta-model a training recipe starts from, as ``train.meta_init`` says: ``random`` (built and
    initialised as :meth:`RecipeContext.build_meta_model` does) or ``average`` (the parameter average
    of the pool's models of the meta-model's architecture, :func:`pool_average`)."""
    if ctx.train.meta_init == "average":
        return pool_average(ctx)
    return ctx.build_meta_model(seed)
