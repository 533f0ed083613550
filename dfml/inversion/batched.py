"""Batched generator inversion: many same-architecture teachers inverted at once with ``torch.vmap``.

Teacher parameters and buffers are stacked (``torch.func.stack_module_state``), as are the
parameters of one fresh generator per teacher and their noise; every step runs

``x = vmap(G)(gen_params, z)`` -> per-teacher augmentation (outside ``vmap``, each teacher with its
own random stream) -> ``loss = vmap(T + losses)(teacher_params, teacher_buffers, x_seen, x)``

and one optimiser (Adam or SGD, both elementwise) over the stacked leaves. Because of that, and the gradient of ``sum_m loss_m``
w.r.t. teacher ``m``'s generator is that of ``loss_m`` alone, so this is exactly
:class:`~dfml.inversion.generator.GeneratorInverter` run on each teacher with the generators of
:func:`model_generators` (checked in float64 by the tests).

BatchNorm under ``vmap``: teachers run in eval mode (running statistics, no batch statistics,
no buffer updates). The BN-statistics prior uses the shared :class:`~dfml.inversion.losses.BNStatMatch`
hooks on the template teacher: inside ``functional_call`` the hooked module's ``running_mean``/
``running_var`` are the vmapped teacher's own buffers, and the terms are consumed within the
vmapped function, so no batched tensor escapes it. Generators with ``norm="batch"`` do run
training-mode ``F.batch_norm`` (batch statistics, no running buffers) inside ``vmap``, but are
differentiated to first order only: the known wrong-gradient hazard in torch 2.14 is second order
through it, and the float64 parity tests check the first-order path against the one-by-one one
(images, losses, best steps and, for the meta-generator, the meta-update).
:meth:`~dfml.inversion.metagen.MetaGeneratorInverter.invert_many` adapts through the same path.

On one CPU thread the batched path is about as fast as the loop (the work is the same); its
point is fewer, larger kernels on an accelerator.

References:
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD), ICML 2023;
    Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from ..types import Task
from .base import INVERTERS, split_task
from .generator import (
    GeneratorInversionConfig,
    GeneratorInverter,
    check_classes,
    check_request,
    inversion_loss,
    make_optimizer,
    seeded_generator,
    teacher_space,
)
from .losses import BNStatMatch

__all__ = [
    "BatchedGeneratorInverter",
    "check_batch_request",
    "check_same_architecture",
    "model_generators",
    "optimise_stacked",
    "stack_teachers",
    "stacked_tasks",
]


_GROUP_HINT = ("the batched inverter needs identical architectures: group the models by pool.entry(i).arch/arch_kwargs "
               "and call invert_many per group, or use GeneratorInverter")


def model_generators(generator: torch.Generator, n: int) -> list[torch.Generator]:
    """``n`` independent CPU generators seeded by ``n`` draws from ``generator`` (one per teacher)."""
    seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def check_same_architecture(teachers: Sequence[nn.Module], fix: str = _GROUP_HINT) -> None:
    """Raise ``ValueError`` unless every teacher has teacher 0's class and state (names, shapes, dtypes,
    devices); ``fix``, what the caller should do, ends the message."""
    ref = teachers[0].state_dict()
    for i, t in enumerate(teachers[1:], start=1):
        state = t.state_dict()
        same = type(t) is type(teachers[0]) and list(state) == list(ref) and all(
            state[k].shape == ref[k].shape and state[k].dtype == ref[k].dtype and state[k].device == ref[k].device
            for k in ref
        )
        if not same:
            raise ValueError(
                f"teacher {i} ({type(t).__name__}) differs in architecture, dtype or device from teacher 0 "
                f"({type(teachers[0]).__name__}); {fix}"
            )


def check_batch_request(
    teachers: Sequence[nn.Module],
    n_shot: int,
    n_query: int,
    model_ids: Sequence[int | None] | None,
    classes: Sequence[tuple[int, ...]] | None,
) -> tuple[list[int | None], list[tuple[int, ...]]]:
    """Check a batched request; returns per-teacher model ids and class tuples.

    Raises:
        ValueError: no teachers, a teacher in training mode, ``n_shot < 1``, heterogeneous teachers,
            or provenance lists of the wrong length.
    """
    if len(teachers) == 0:
        raise ValueError("invert_many needs at least one teacher, got an empty list")
    for t in teachers:
        check_request(t, n_shot, n_query)
    check_same_architecture(teachers)
    m = len(teachers)
    ids = list(model_ids) if model_ids is not None else [None] * m
    cls = [tuple(c) for c in classes] if classes is not None else [()] * m
    if len(ids) != m or len(cls) != m:
        raise ValueError(f"give one model id and one class tuple per teacher ({m}), got {len(ids)} and {len(cls)}")
    return ids, cls


def stack_teachers(teachers: Sequence[nn.Module]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Teacher parameters (detached) and buffers stacked along a new leading dimension ``M``."""
    t_params, t_buffers = stack_module_state(list(teachers))
    return {k: v.detach() for k, v in t_params.items()}, t_buffers


def optimise_stacked(
    base: nn.Module,
    t_params: dict[str, Tensor],
    t_buffers: dict[str, Tensor],
    gens: list[nn.Module],
    z: Tensor,
    y: Tensor,
    rngs: list[torch.Generator],
    cfg: GeneratorInversionConfig,
    final_grad: bool = False,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], dict[str, Tensor] | None]:
    """:func:`~dfml.inversion.generator.optimise_generator` for ``M`` teachers at once.

    Args:
        base: the template teacher (teacher 0); ``t_params``/``t_buffers`` hold all ``M`` stacked.
        gens: ``M`` generators of one architecture (their initial parameters are stacked and copied).
        z: noise ``[M, B, nz]``; y: targets ``[B]``; rngs: one random stream per teacher (augmentation).
        final_grad: one more forward pass at the adapted parameters and its gradient (FOMAML).

    Returns:
        ``(best_x [M, B, ...], best_loss [M], best_step [M], adapted stacked generator params,
        stacked gradients at them or None)``.
    """
    m = len(gens)
    g_params, _ = stack_module_state(gens)  # stateless norms: no generator buffers
    n_params = len(g_params)
    leaves = list(g_params.values()) + ([z] if cfg.learn_z else [])
    groups = [{"params": list(g_params.values()), "lr": cfg.lr}]
    opt = make_optimizer(groups + ([{"params": [z], "lr": cfg.z_lr}] if cfg.learn_z else []), cfg)
    best_loss = torch.full((m,), float("inf"), device=z.device, dtype=z.dtype)
    best_step = torch.full((m,), -1, device=z.device)
    best_x: Tensor | None = None
    grads: dict[str, Tensor] | None = None
    with BNStatMatch(base) as bn:

        def gen_fn(p: dict[str, Tensor], zz: Tensor) -> Tensor:
            return functional_call(gens[0], p, (zz, y) if cfg.conditional else (zz,))

        def loss_fn(p: dict[str, Tensor], b: dict[str, Tensor], x_seen: Tensor, x: Tensor) -> Tensor:
            logits = functional_call(base, (p, b), (x_seen,))
            return inversion_loss(logits, y, x, x_seen, bn.loss(), cfg)  # BN terms consumed inside vmap

        for step in range(cfg.steps + int(final_grad)):
            x = torch.vmap(gen_fn)(g_params, z)
            x_seen = x if cfg.augment is None else torch.stack([cfg.augment(x[i], rngs[i]) for i in range(m)])
            losses = torch.vmap(loss_fn)(t_params, t_buffers, x_seen, x)
            better = losses.detach() < best_loss
            mask = better.view(m, *([1] * (x.dim() - 1)))
            best_x = x.detach() if best_x is None else torch.where(mask, x.detach(), best_x)
            best_step = torch.where(better, torch.full_like(best_step, step), best_step)
            best_loss = torch.minimum(losses.detach(), best_loss)
            g = torch.autograd.grad(losses.sum(), leaves)
            if step == cfg.steps:  # the FOMAML pass: gradient at the adapted parameters, no update
                grads = dict(zip(g_params, g[:n_params]))
                break
            for p, gp in zip(leaves, g):
                p.grad = gp
            opt.step()
    for p in leaves:
        p.grad = None
    assert best_x is not None
    return best_x, best_loss, best_step, {k: v.detach() for k, v in g_params.items()}, grads


@INVERTERS.register("generator")
class BatchedGeneratorInverter(GeneratorInverter):
    """Invert several same-architecture teachers at once, each with its own fresh generator.

    ``invert`` (one teacher, optional student) is :class:`GeneratorInverter`'s; ``invert_many``
    stacks the teachers. Both add to the same ``cost``.

    Args:
        input_shape: shape of one teacher input, ``(C, H, W)`` or ``(D,)``.
        config: hyper-parameters (as for :class:`~dfml.inversion.generator.GeneratorInverter`).

    Example:
        >>> inv = BatchedGeneratorInverter((3, 32, 32))
        >>> tasks = inv.invert_many([pool.load(i) for i in ids], 1, 15, g, model_ids=ids)
    """

    batched = True

    def invert_many(
        self,
        teachers: Sequence[nn.Module],
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        model_ids: Sequence[int | None] | None = None,
        classes: Sequence[tuple[int, ...]] | None = None,
        *,
        generators: Sequence[torch.Generator] | None = None,
    ) -> list[Task]:
        """One pseudo task per teacher; equal to ``GeneratorInverter.invert(teachers[m], ...,
        model_generators(generator, M)[m])`` for every ``m``.

        Args:
            teachers: ``M`` frozen eval-mode teachers of one architecture.
            model_ids, classes: per-teacher provenance (``None``: none).
            generators: one generator per teacher, used instead of ``model_generators(generator, M)``
                (``generator`` is then not drawn from): a share of a larger draw, as when ranks split
                the teachers (see :meth:`dfml.datafree.stream.DataFreeStream.recover_many`).

        Returns:
            ``M`` tasks in teacher order.

        Raises:
            ValueError: see :func:`check_batch_request`; also ``classes`` not one per output.
        """
        model_ids, classes = check_batch_request(teachers, n_shot, n_query, model_ids, classes)
        cfg, m, per_class = self.config, len(teachers), n_shot + n_query
        like = next(teachers[0].parameters())
        with self.cost.timed(like.device):
            t_params, t_buffers = stack_teachers(teachers)
            if generators is not None and len(generators) != m:
                raise ValueError(f"got {len(generators)} generators for {m} teachers; pass one per teacher")
            rngs = list(generators) if generators is not None else model_generators(generator, m)
            n_way = self.count_classes_stacked(teachers[0], t_params, t_buffers, like)
            for c in classes:
                check_classes(c, n_way)
            n = n_way * per_class
            gens = [seeded_generator(self.input_shape, cfg, n_way, r) for r in rngs]
            gens = [g.to(device=like.device, dtype=like.dtype) for g in gens]
            z = torch.stack([torch.randn((n, cfg.nz), generator=r, dtype=like.dtype) for r in rngs]).to(like.device)
            z.requires_grad_(cfg.learn_z)
            y = torch.arange(n_way, device=like.device).repeat_interleave(per_class)
            x, best_loss, best_step, _, _ = optimise_stacked(teachers[0], t_params, t_buffers, gens, z, y, rngs, cfg)
        self.charge(m * cfg.steps * n, m * cfg.steps, m * n)
        return stacked_tasks(x, best_loss, best_step, cfg, n_way, n_shot, n_query, model_ids, classes, "generator")


def stacked_tasks(
    x: Tensor, best_loss: Tensor, best_step: Tensor, cfg: GeneratorInversionConfig, n_way: int, n_shot: int,
    n_query: int, model_ids: list[int | None], classes: list[tuple[int, ...]], kind: str,
) -> list[Task]:
    """Split each teacher's kept batch ``x[m]`` (in the teacher's input space) into a task with provenance."""
    tasks = []
    for i in range(x.shape[0]):
        xi = teacher_space(x[i], cfg.augment)
        task = split_task(xi, n_way, n_shot, n_query, model_id=model_ids[i], classes=classes[i])
        task.source.extra.update(inverter=kind, best_loss=float(best_loss[i]), best_step=int(best_step[i]))
        tasks.append(task)
    return tasks
