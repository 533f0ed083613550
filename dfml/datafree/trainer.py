"""Meta-training on pseudo tasks recovered from a model pool.

The loop: invert every pool model once into a bank of synthetic examples per class, then
repeatedly sample a meta-batch of pseudo tasks from the bank (one model per task, its classes
shuffled so the head cannot memorise a teacher's label order), take a MAML meta-step, score the
meta-model on fixed meta-validation episodes now and then, and keep the best. Checkpoints hold the
meta-model, the optimiser, the step, the sampling generator and the best-so-far, so a killed run
resumes and reproduces the uninterrupted one.

Under ``torchrun`` every rank runs the same loop on the same meta-batch: the meta-update is
data-parallel (each rank differentiates its share of the tasks, gradients are summed, see
:mod:`dfml.meta.parallel`), meta-validation episodes are shared out, and rank 0 alone writes
metrics and checkpoints. Nothing in a checkpoint depends on the number of ranks, so a run resumes
on any number of processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from ..config import check_ranges, positive_number, refuse_moved
from ..eval.sharded import evaluate_sharded
from ..extension import budget_stop
from ..meta.learner import Learner
from ..meta.maml import MAML
from ..meta.parallel import data_parallel_update, replicated
from ..meta.update import MetaUpdate, default_update
from ..models.registry import MODELS
from ..runs import RunDir
from ..types import Task
from .bank import SyntheticBank
from .base import BankStream, StreamExhausted, TaskStream

log = logging.getLogger(__name__)


@refuse_moved("train")
@dataclass(frozen=True)
class TrainConfig:
    """Meta-training hyper-parameters (the shape vocabulary of the whole package).

    Attributes:
        n_way, n_shot, n_query: shape of the pseudo tasks.
        meta_batch_size: tasks per meta-update.
        steps: meta-updates.
        inner_steps, inner_lr, first_order, learn_inner_lr: the inner loop of meta-training, in one
            place for every learner (:meth:`inner_loop`): ``datafree.learner`` ``maml`` (cross-entropy)
            and ``distill`` (knowledge distillation, whose own section ``datafree.distill`` holds only
            its temperature) both take ``inner_steps`` SGD steps at ``inner_lr`` on each task's support
            set, drop the second-order terms with ``first_order`` (FOMAML), and learn one step size per
            step from ``inner_lr`` with ``learn_inner_lr``.
        outer_lr: Adam learning rate of the meta-update.
        val_every, val_episodes: meta-validation cadence and size (model selection uses it only); its
            fine-tuning is the evaluation section's (``eval.val_steps``/``val_lr``, by default
            meta-test's ``eval.steps``/``lr``), handed to :class:`MetaTrainer`.
        checkpoint_every: meta-updates between checkpoints.
        checkpoint_minutes: also checkpoint once this many minutes passed since the last checkpoint
            (or the start), so that slow steps (minutes each on 84x84 data) lose little to a kill.
            A checkpoint draws no random numbers: a resume reproduces the uninterrupted run wherever
            it was taken.
        meta_init: where the meta-model starts: ``random`` (the protocol's initialisation) or
            ``average`` (the parameter average of the pool's models of its architecture, the
            ``average`` baseline), which needs pool models of ``n_way`` classes.
        budget_minutes: stop meta-training once it has used this many minutes of CPU time (the
            process's, ``time.process_time``: with one intra-op thread, minutes of one core), counted
            over inversion and meta-updates and across resumes, meta-validation excluded; the model
            reached is validated and selection proceeds as usual (``None``: no limit but ``steps``).
            Every ``metrics.jsonl`` record carries ``cpu_s``, the CPU seconds used so far.
        seed: seeds task sampling, inversion and the meta-model's initialisation.
        meta_arch, meta_arch_kwargs: the meta-model's architecture, a choice of its own
            (``None``: the pool's, which needs a pool of one architecture). Its input-size
            arguments (``in_channels``, ``image_size``, ``in_features``) and ``num_classes`` come
            from the meta-model's inputs and ``n_way``; leave them out of ``meta_arch_kwargs``.
        meta_image_size: side length of the meta-model's input images (``None``: the meta-test
            dataset's). Recovered images are resized to it from each teacher's own size, and
            meta-validation/test images from the dataset's.
    """

    n_way: int = 5
    n_shot: int = 1
    n_query: int = 15
    meta_batch_size: int = 4
    steps: int = 300
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    learn_inner_lr: bool = False
    outer_lr: float = 1e-3
    val_every: int = 100
    val_episodes: int = 100
    checkpoint_every: int = 50
    checkpoint_minutes: float = 10.0
    budget_minutes: float | None = None
    meta_init: str = "random"
    seed: int = 0
    meta_arch: str | None = None
    meta_arch_kwargs: dict[str, Any] = field(default_factory=dict)
    meta_image_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot", "n_query", "meta_batch_size", "steps", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_way < 2:
            raise ValueError(f"train.n_way must be an integer >= 2 (a classification task), got {self.n_way}")
        check_ranges(self, "train.", counts=("val_episodes", "checkpoint_every"),
                     naturals=("inner_steps",), positive=("inner_lr", "outer_lr"))
        if self.learn_inner_lr and self.inner_steps == 0:
            raise ValueError("train.learn_inner_lr=true learns a step size per inner step, but train.inner_steps=0; "
                             "set train.inner_steps >= 1 or train.learn_inner_lr=false")
        if self.meta_arch is not None and self.meta_arch not in MODELS:
            raise ValueError(
                f"train.meta_arch={self.meta_arch!r} is not an architecture; valid: {', '.join(MODELS.names())}"
            )
        if self.meta_arch_kwargs and self.meta_arch is None:
            raise ValueError("train.meta_arch_kwargs is set but train.meta_arch is not; name the architecture too")
        fixed = sorted({"num_classes", "in_channels", "image_size", "in_features"} & set(self.meta_arch_kwargs))
        if fixed:
            raise ValueError(
                f"train.meta_arch_kwargs sets {fixed}, which follow from the meta-model's inputs and n_way; drop them "
                "(use train.meta_image_size for the image size and train.n_way for the classes)"
            )
        if self.meta_image_size is not None and self.meta_image_size < 1:
            raise ValueError(
                f"train.meta_image_size must be >= 1 (or null: the meta-test dataset's), got {self.meta_image_size}"
            )
        minutes = self.checkpoint_minutes
        if not positive_number(minutes):
            raise ValueError(
                f"train.checkpoint_minutes must be a number of minutes > 0, got {minutes!r} (default 10.0; "
                "checkpoints also come every train.checkpoint_every steps)"
            )
        if self.meta_init not in ("random", "average"):
            raise ValueError(f"train.meta_init must be 'random' or 'average', got {self.meta_init!r}")
        budget = self.budget_minutes
        if budget is not None and not positive_number(budget):
            raise ValueError(
                f"train.budget_minutes must be a number of CPU minutes > 0 or null (no limit), got {budget!r}"
            )

    def inner_loop(self) -> dict[str, Any]:
        """The inner-loop arguments every learner takes: ``MAML(model, **train.inner_loop())``."""
        return {"inner_steps": self.inner_steps, "inner_lr": self.inner_lr, "first_order": self.first_order,
                "learn_inner_lr": self.learn_inner_lr}


class MetaTrainer:
    """Meta-trains on pseudo tasks with meta-validation selection and exact resume.

    The loop is written once: each step asks the task stream for a meta-batch, applies the
    meta-update, logs, gives the stream its feedback (e.g. a reward for a model selector),
    validates every ``val_every`` steps on real meta-validation episodes (model selection uses
    nothing else) and checkpoints everything, the stream's state included.

    Args:
        model: the meta-model (head with ``n_way`` outputs); trained in place.
        tasks: a :class:`~dfml.datafree.base.TaskStream`, or a bank with ``sample_task`` (e.g.
            :class:`~dfml.datafree.bank.SyntheticBank`), which is wrapped in a
            :class:`~dfml.datafree.base.BankStream`.
        val_tasks: a factory returning the fixed meta-validation episodes (real, unseen classes).
        config: hyper-parameters.
        run: where metrics and checkpoints go (``None``: in memory only, no resume).
        device: where meta-training runs.
        learner: the meta-learner wrapping ``model`` (default: :class:`MAML` with ``config.inner_loop()``).
        update: the meta-update (default: the learner's own ``meta_step``).
        val_steps, val_lr: the fine-tuning of each meta-validation episode (in a run: ``eval.val_steps``
            and ``eval.val_lr``, by default meta-test's, see :meth:`dfml.eval.EvalConfig.validation`).
    """

    def __init__(
        self,
        model: nn.Module,
        tasks: TaskStream | SyntheticBank,
        val_tasks: Callable[[], Iterable[Task]],
        config: TrainConfig,
        run: RunDir | None = None,
        device: torch.device | str = "cpu",
        *,
        learner: nn.Module | None = None,
        update: MetaUpdate | None = None,
        val_steps: int = 10,
        val_lr: float = 0.01,
    ) -> None:
        self.config = config
        self.val_steps, self.val_lr = val_steps, val_lr
        self.device = dist.device_for(device)
        self.learner = learner if learner is not None else MAML(model, **config.inner_loop())
        self.learner.to(self.device)
        self.model = self.learner.network
        if isinstance(tasks, TaskStream):
            self.stream = tasks
        else:
            self.stream = BankStream(tasks, config.n_way, config.n_shot, config.n_query, config.meta_batch_size)
        self.update = _update_for_world(update, self.learner)
        self.val_tasks = val_tasks
        self.run = run
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=config.outer_lr)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self.best: dict[str, Any] = {"acc": -1.0, "step": -1, "state": None}
        self.stopped: dict[str, Any] | None = None  # {"step", "reason", "kind"} once the stream or budget ends
        self.cpu_seconds = 0.0  # CPU time of meta-training so far (train.budget_minutes), across resumes

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "best": self.best,
            "stream": self.stream.state_dict(),
            "stopped": self.stopped,
            "cpu_seconds": self.cpu_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.learner.load_state_dict(state["learner"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.best = state["best"]
        self.stream.load_state_dict(state.get("stream", {}))
        self.stopped = state.get("stopped")
        self.cpu_seconds = float(state.get("cpu_seconds", 0.0))
        if self.stopped is not None and budget_stop(self.stopped) and self._budget_left():
            log.info("train.budget_minutes is now %s (the run stopped at %.1f CPU-minutes, step %d): going on",
                     self.config.budget_minutes, self.cpu_seconds / 60.0, self.step)
            self.stopped = None  # a run extended to a larger budget (dfml train --extend) goes on

    def _budget_left(self) -> bool:
        budget = self.config.budget_minutes
        return budget is None or self.cpu_seconds < 60.0 * budget

    def _checkpoint(self) -> None:
        if self.run is not None and dist.is_main():
            self.run.save_checkpoint(self.state_dict())

    # ------------------------------------------------------------------- loop
    def validate(self) -> float:
        """Mean accuracy on the meta-validation episodes (fine-tuned as at meta-test; shared out among ranks).

        A diverged fine-tune or a degenerate result (see :func:`~dfml.eval.evaluate`) raises, naming
        ``eval.val_lr``/``eval.val_steps``: selecting among chance-level scores would pick an arbitrary step.
        """
        res = evaluate_sharded(
            self.model,
            self.val_tasks(),
            steps=self.val_steps,
            lr=self.val_lr,
            device=self.device,
            settings={"lr": "eval.val_lr (or eval.lr when unset)",
                      "steps": "eval.val_steps (or eval.steps when unset)"},
        )
        return float(res.mean)

    def fit(self, progress: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Train to ``config.steps`` (resuming from the run's last checkpoint) and load the best weights.

        A stream that raises :class:`~dfml.datafree.base.StreamExhausted` (e.g. every teacher's query
        budget is spent) ends meta-training early: the model of the step reached is validated too,
        the best validated one is selected as usual, and the checkpoint records the stop, so a
        resume does nothing more; a stop on ``train.budget_minutes`` is lifted by a resume with a
        larger budget (``dfml train --extend``, see :class:`dfml.runs.RunDir`).

        Returns:
            ``{"best_val_acc", "best_step", "steps", "seconds"}``, plus ``"stopped_early": {"step",
            "reason"}`` when the stream ended first.

        Raises:
            RuntimeError: the stream was exhausted before the first step (nothing to select).
        """
        cfg = self.config
        if self.run is not None:
            state = self.run.load_checkpoint()
            if state is not None:
                self.load_state_dict(state)
                if dist.is_main():
                    self.run.truncate_metrics(self.step)
                log.info("resuming from step %d", self.step)
            elif dist.is_main() and self.run.metrics_file.exists():
                self.run.truncate_metrics(0)  # logged by a start killed before its first checkpoint
            dist.barrier()  # every rank has read the checkpoint before rank 0 may replace it
        start = time.perf_counter()
        last_checkpoint = time.monotonic()
        while self.step < cfg.steps and self.stopped is None:
            if not self._budget_left():
                self._stop_early(f"CPU budget of {cfg.budget_minutes:g} minutes spent (train.budget_minutes)", progress,
                                 kind="budget")
                break
            cpu_start = time.process_time()
            try:
                batch = self.stream.next_batch(self.step, self.generator)
            except StreamExhausted as end:
                if self.step == 0:
                    fix = f"; {end.fix}" if end.fix else ""
                    raise RuntimeError(f"meta-training cannot take its first step: {end}{fix}") from None
                self._stop_early(str(end), progress)
                break
            tasks = [t.to(self.device) for t in batch]
            metrics = self.update(self.learner, tasks, self.optimizer)
            if not all(torch.isfinite(torch.tensor(v)) for v in metrics.values()):
                raise FloatingPointError(
                    f"meta-training diverged at step {self.step} ({metrics}); lower train.outer_lr "
                    f"(now {cfg.outer_lr}) or train.inner_lr (now {cfg.inner_lr}). The last good "
                    "checkpoint is kept; fix the config in a new run directory."
                )
            feedback = self.stream.feedback(self.step, tasks, metrics, self.learner)
            self.cpu_seconds += time.process_time() - cpu_start
            self.step += 1
            record: dict[str, Any] = {"step": self.step, **metrics, **feedback, "cpu_s": self.cpu_seconds}
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                record["val_acc"] = self._select()
            if self.run is not None and dist.is_main():
                self.run.log_metrics(record)
                now = time.monotonic()
                if (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                        or now - last_checkpoint >= 60.0 * cfg.checkpoint_minutes):
                    self._checkpoint()
                    last_checkpoint = now
            if progress is not None:
                progress(self.step, record)
        if self.best["state"] is not None:
            self.model.load_state_dict(self.best["state"])
        if self.run is not None and dist.is_main():
            self.run.save_checkpoint({"model": self.model.state_dict(), "step": self.best["step"]}, "best")
        out = {
            "best_val_acc": self.best["acc"],
            "best_step": self.best["step"],
            "steps": self.step,
            "seconds": time.perf_counter() - start,
        }
        return out if self.stopped is None else {**out, "stopped_early": dict(self.stopped)}

    def _select(self) -> float:
        """Validate the meta-model as it is now and keep its weights if they are the best so far."""
        acc = self.validate()
        if acc > self.best["acc"]:
            self.best = {
                "acc": acc,
                "step": self.step,
                "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            }
        return acc

    def _stop_early(self, reason: str, progress: Callable[[int, dict[str, Any]], None] | None,
                    kind: str = "stream") -> None:
        """No meta-batch for this step (``kind``: ``"stream"``, the stream is exhausted, or ``"budget"``,
        train.budget_minutes is spent): validate the model reached, record why, checkpoint."""
        log.warning("meta-training stopped early at step %d of %d: %s", self.step, self.config.steps, reason)
        self.stopped = {"step": self.step, "reason": reason, "kind": kind}
        record: dict[str, Any] = {"step": self.step, "stopped_early": reason}
        if self.step % self.config.val_every != 0:  # not validated when it was reached
            record["val_acc"] = self._select()
        if self.run is not None and dist.is_main():
            self.run.log_metrics(record)
            self._checkpoint()
        if progress is not None:
            progress(self.step, record)


def _update_for_world(update: MetaUpdate | None, learner: Any) -> Callable[..., dict[str, float]]:
    """The meta-update to run: alone ``update`` (default: the learner's meta-step); under ``torchrun``
    an update that sums over tasks (:attr:`MetaUpdate.sums_over_tasks`) becomes data-parallel when the
    learner can accumulate a share of the tasks (:attr:`Learner.sums_over_tasks`), and anything else
    runs replicated (see :mod:`dfml.meta.parallel`)."""
    update = update or default_update
    if not dist.is_distributed():
        return update
    if _sums_over_tasks(update) and isinstance(learner, Learner) and learner.sums_over_tasks:
        return data_parallel_update
    if dist.is_main():
        log.warning(
            "the meta-update %s is not a sum over tasks, so it runs whole on each of the %d ranks (no "
            "speed-up for the update; inversion is still shared out)",
            getattr(update, "__name__", type(update).__name__), dist.world_size(),
        )
    return replicated(update)


def _sums_over_tasks(update: Any) -> bool:
    """Whether ``update`` declares itself a sum over tasks (a plain function does not)."""
    return isinstance(update, MetaUpdate) and update.sums_over_tasks
