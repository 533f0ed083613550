"""The pixel bank's batched refinement: several models of one architecture refined at once.

Teacher parameters and buffers are stacked with ``torch.func.stack_module_state`` and run through
``torch.vmap(functional_call)``; BatchNorm statistics are captured by forward hooks on a private
``meta``-device copy, registered and consumed *inside* each vmapped call so no batched tensor
escapes. It takes exactly the steps :meth:`PixelBankInverter.refine <dfml.inversion.bank.PixelBankInverter.refine>`
takes one model at a time (same random draws, same losses, same updates; the tests check this in
float64). Hazard: teachers must be in eval mode. In torch 2.14, second-order gradients through
``F.batch_norm`` in *training* mode under ``vmap`` are silently wrong; eval mode (running
statistics) is what the prior needs anyway, and both refine paths refuse training-mode teachers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from .batched import check_same_architecture
from .losses import class_loss

__all__ = ["BatchedRefinement"]


def child_generator(generator: torch.Generator) -> torch.Generator:
    """One draw from ``generator`` seeds a per-model generator (same order batched or one by one)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(seed)


def check_eval_mode(teacher: nn.Module) -> None:
    """Refuse anything but an eval-mode module as a teacher (its BN running statistics are the prior)."""
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"a teacher must be an nn.Module, got {type(teacher).__name__}")
    if teacher.training:
        raise ValueError("the teacher must be in eval mode (its BN running statistics are the prior); call .eval()")


class BatchedRefinement:
    """:meth:`refine_many` of :class:`~dfml.inversion.bank.PixelBankInverter` (a mixin: it uses the bank's entries,
    its per-model random streams and its Adam step)."""

    def refine_many(
        self,
        teachers: Sequence[nn.Module],
        model_ids: Sequence[int],
        generator: torch.Generator,
        steps: int | None = None,
    ) -> list[dict[str, float]]:
        """:meth:`refine` for several models of one architecture at once (``vmap`` over stacked teachers).

        Equivalent to ``[self.refine(t, i, generator, steps) for t, i in zip(teachers, model_ids)]``:
        same random draws, losses and updated inputs (up to floating-point summation order).

        Args:
            teachers: eval-mode models with identical parameter/buffer names and shapes and the
                same number of classes.
            model_ids: their (distinct) bank ids.

        Raises:
            ValueError: lengths differ, repeated ids, a teacher in training mode, or teachers of
                different architectures (refine those separately or group them by architecture).
        """
        teachers, model_ids = list(teachers), [int(i) for i in model_ids]
        if len(teachers) != len(model_ids) or not teachers:
            raise ValueError(f"refine_many needs one model id per teacher, got {len(teachers)} teachers and ids {model_ids}")
        if len(set(model_ids)) != len(model_ids):
            raise ValueError(f"refine_many got repeated model ids {model_ids}; each model's entry is refined once per call")
        for t in teachers:
            check_eval_mode(t)
        check_same_architecture(teachers, fix="refine_many needs teachers of one architecture: group them by architecture")
        steps = self.config.steps if steps is None else int(steps)
        gens = [child_generator(generator) for _ in teachers]
        p = next(teachers[0].parameters())
        outs: list[dict[str, float]] = [{} for _ in teachers]
        with self.cost.timed(p.device):
            for t, i, g in zip(teachers, model_ids, gens):
                self._ensure(t, i, g)
            shapes = {tuple(self.entries[i].shape) for i in model_ids}
            if len(shapes) != 1:
                raise ValueError(f"refine_many needs teachers with the same number of classes, got entries {shapes}")
            params, buffers = stack_module_state(teachers)
            params = {k: v.detach() for k, v in params.items()}
            base = copy.deepcopy(teachers[0]).to("meta")
            run = torch.vmap(stat_forward(base))
            for _ in range(steps):
                flat = [self._flat(i) for i in model_ids]
                xs = torch.stack([x for x, _ in flat]).detach().requires_grad_(True)  # [M, N, *shape]
                y = flat[0][1]
                aug = torch.stack([self._augment(xs[j], g) for j, g in enumerate(gens)])
                logits, bn = run(params, buffers, aug)  # [M, N, C], [M]
                per = [(class_loss(logits[j], y), bn[j], *self._priors(xs[j])) for j in range(len(teachers))]
                losses = [self._total(*parts) for parts in per]
                (grad,) = torch.autograd.grad(torch.stack(losses).sum(), [xs])
                for j, i in enumerate(model_ids):
                    self._apply(i, grad[j])
                    outs[j] = self._metrics(losses[j], per[j])
        self._count(steps, len(y) if steps else 0, len(teachers))
        return outs


def stat_forward(base: nn.Module) -> Callable[[dict, dict, Tensor], tuple[Tensor, Tensor]]:
    """``f(params, buffers, x) -> (logits, bn_term)`` for one model; vmappable.

    The BN-statistics term equals :class:`BNStatMatch`'s (unit layer weights). Its hooks live on
    ``base`` (a private copy) only during the call and collect into a list local to the call.
    """
    layers = [m for m in base.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]

    def forward(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        terms: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
            h = inputs[0]
            dims = [0] + list(range(2, h.dim()))
            terms.append(torch.linalg.vector_norm(h.mean(dims) - module.running_mean)
                         + torch.linalg.vector_norm(h.var(dims, unbiased=False) - module.running_var))

        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            logits = functional_call(base, (params, buffers), (x,))
        finally:
            for h in handles:
                h.remove()
        return logits, torch.stack(terms).sum() if terms else x.new_zeros(())

    return forward
