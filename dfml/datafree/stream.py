"""The data-free task stream: select models, invert them, remember the tasks, mix the meta-batch.

One step of :class:`DataFreeStream` (a :class:`~dfml.datafree.base.TaskStream` for the
:class:`~dfml.datafree.trainer.MetaTrainer`)::

    selector.select(n) -> model ids -> inverter.invert(teacher) -> new tasks
    new tasks + memory tasks + interpolated memory tasks -> meta-batch (-> the meta-update)
    new tasks -> memory
    after the update: reward (data-free: the agreement of other pool models with a model's
    recovered images, or the meta-learner's improvement on tasks recovered earlier from *other*
    models) -> selector.update(ids, reward)

Every part is optional but the inverter: no selector means uniform selection, no memory means the
meta-batch is new tasks only. Randomness comes from the trainer's generator; the state of the
selector, the memory, the inverter (meta-generator, pixel bank) and the reward tasks is in
``state_dict`` so a run resumes exactly.

Under ``torchrun`` every rank runs the stream with the same generator, so every rank builds the
same meta-batch and holds the same memory: stateless inverters share the models of a step out
among the ranks and gather the tasks, and rank 0's selections and rewards are broadcast.

The parts the stream uses are in their own modules: teacher caching and input-domain conversion
(:mod:`dfml.datafree.teachers`), query budgets (:mod:`dfml.datafree.budget`: a model that cannot
fund a task is never drawn, the inverter leaves the teacher logits' queries unspent, and when no
model can fund a task the stream raises :class:`~dfml.datafree.base.StreamExhausted`), rewards
(:mod:`dfml.datafree.rewards`) and what is done to a task (:mod:`dfml.datafree.tasks`). The
inverter's capabilities (batched, stateful, black-box) are what it declares
(:class:`~dfml.inversion.base.Inverter`).

References:
    Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023 (memory, interpolation
    and a policy-gradient reliability weigher in one loop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from ..data.domain import InputDomain
from ..inversion.base import Inverter
from ..inversion.blackbox import BlackBoxPool
from ..inversion.sharded import shard_map, sync_cost
from ..memory import MetaBatchMix, TaskMemory, build_meta_batch, plan_meta_batch
from ..meta.distill import attach_teacher_logits
from ..pool import ModelPool
from ..selection import Selector, UniformSelector
from ..types import Task
from .budget import QueryPlan
from .config import StreamConfig as StreamConfig
from .rewards import Reward, agreement
from .tasks import TaskAugment, restrict_task
from .teachers import Teachers

log = logging.getLogger(__name__)

__all__ = ["DataFreeStream", "StreamConfig", "TaskAugment", "restrict_task"]


class DataFreeStream:
    """Meta-batches recovered from a model pool (see the module docstring).

    Args:
        pool: the model pool (teachers are loaded lazily and cached).
        inverter: an :class:`~dfml.inversion.base.Inverter`.
        config: task shape, meta-batch size, reward.
        selector: which models to invert (default: uniform).
        memory: the task memory (default: none; every task is new).
        mix: the new/memory/interpolated ratio (default: all new).
        learner: the meta-learner; needed for the held-out reward (its ``loss`` and ``params``).
        student: called each step to get the ``student`` argument of ``invert`` (boundary terms,
            harder episodes); ``None`` passes no student.
        teacher_logits: attach the teacher's logits on every new task's inputs (for distilling
            learners, see :func:`~dfml.meta.distill.attach_teacher_logits`).
        access: wraps each loaded model before use, ``access(model, model_id)`` (e.g. a
            :class:`~dfml.inversion.blackbox.BlackBoxPool` for outputs-only, budgeted access);
            its ``state_dict`` is checkpointed with the stream.
        domains, target: the input domain of every pool model and the meta-model's (see
            :class:`~dfml.datafree.teachers.Teachers`); ``None``: every model takes the meta-model's inputs.
        device: where teachers run and tasks are made.
        reward: the selector's reward (default: ``config.reward``'s, see :meth:`StreamConfig.make_reward`).
    """

    def __init__(
        self,
        pool: ModelPool,
        inverter: Inverter,
        config: StreamConfig | None = None,
        *,
        selector: Selector | None = None,
        memory: TaskMemory | None = None,
        mix: MetaBatchMix | None = None,
        learner: nn.Module | None = None,
        student: Callable[[], Any] | None = None,
        teacher_logits: bool = False,
        access: Callable[[nn.Module, int], Any] | None = None,
        domains: Sequence[InputDomain] | None = None,
        target: InputDomain | None = None,
        device: torch.device | str = "cpu",
        reward: Reward | None = None,
    ) -> None:
        if not isinstance(inverter, Inverter):
            raise TypeError(f"inverter must be a dfml.inversion.Inverter (with an invert(...) method), got "
                            f"{type(inverter).__name__}")
        self.pool = pool
        self.inverter = inverter
        self.config = config or StreamConfig()
        self.selector = selector or UniformSelector(len(pool))
        if self.selector.n_models != len(pool):
            raise ValueError(
                f"the selector is for {self.selector.n_models} models but the pool has {len(pool)}; "
                "build it with n_models=len(pool)"
            )
        if (mix is not None and (mix.memory > 0 or mix.interpolated > 0)) and memory is None:
            raise ValueError("mix asks for memory or interpolated tasks but no memory was given; pass memory=TaskMemory()")
        self.memory = memory
        self.mix = mix or MetaBatchMix()
        self.learner = learner
        self.student = student
        self.teacher_logits = teacher_logits
        self.access = access
        self.teachers = Teachers(pool, self.config.teacher_cache, access=access, domains=domains, target=target,
                                 device=device)
        self.device = self.teachers.device
        cfg = self.config
        self.budget = QueryPlan(pool, inverter, access, (cfg.n_way, cfg.n_shot, cfg.n_query), teacher_logits)
        self.reward = reward if reward is not None else cfg.make_reward()
        self._inversion_metrics: dict[str, float] = {}
        self.judge_queries = 0  # teacher queries spent judging other models' tasks (agreement reward)

    # ----------------------------------------------------------------- teachers
    def teacher(self, i: int) -> nn.Module:
        """Model ``i`` of the pool, loaded once and kept while recently used."""
        return self.teachers(i)

    def domain(self, i: int) -> InputDomain | None:
        """The input domain of model ``i`` (``None`` when the stream has no domains)."""
        return self.teachers.domain(i)

    def to_target(self, task: Task, i: int) -> Task:
        """``task``, recovered from model ``i`` in its domain, carried to the meta-model's."""
        return self.teachers.to_target(task, i)

    def fundable(self, i: int, owed: int = 0) -> bool:
        """Whether model ``i`` can fund one more task beyond ``owed`` queries (see :class:`QueryPlan`)."""
        return self.budget.fundable(i, owed)

    # ----------------------------------------------------------------- recovery
    def recover(self, i: int, step: int, generator: torch.Generator) -> Task:
        """One pseudo task from model ``i``: its own classes (``n_way`` of them), labels ``0..n_way-1``."""
        return self.recover_many([i], step, generator)[0]

    def recover_many(self, ids: list[int], step: int, generator: torch.Generator) -> list[Task]:
        """One pseudo task per model in ``ids``, in the meta-model's input domain.

        An inverter that is not ``stateful`` (pixels, per-model generators) inverts each model with its
        own generator (one draw per model from ``generator``), so under ``torchrun`` every rank inverts
        its share of ``ids`` and the tasks are gathered in order: every rank ends with the same tasks,
        whatever the number of ranks (see :mod:`dfml.inversion.sharded`). Stateful inverters (pixel
        bank, meta-generator) and budgeted black-box access run whole on every rank. ``batched``
        inverters recover the models of one architecture and input domain in one call (stacked
        teachers) when no student is involved.
        """
        return [self.to_target(t, i) for i, t in self._recover(ids, step, generator)]

    def _recover(self, ids: list[int], step: int, generator: torch.Generator,
                 skip_unfunded: bool = False) -> list[tuple[int, Task]]:
        """``(model id, task)`` in each teacher's own domain (see :meth:`recover_many`); with
        ``skip_unfunded``, models that cannot fund a task when their turn comes are left out."""
        entries = [self.pool.entry(i) for i in ids]
        student = self.student() if self.student is not None else None
        if not self.inverter.stateful and self.access is None:
            costs = self.inverter.cost_parts()
            before = [c.as_dict() for c in costs]
            tasks = shard_map(len(ids), generator, lambda mine, rngs: self._invert(
                [ids[j] for j in mine], [entries[j] for j in mine], rngs, student), self.device)
            for cost, was in zip(costs, before):
                sync_cost(cost, was)
        else:
            tasks = self._invert(ids, entries, generator, student, skip_unfunded)
        return [(i, self._finish(t, i, e, step, generator)) for t, i, e in zip(tasks, ids, entries) if t is not None]

    def _invert(self, ids: list[int], entries: list[Any], rngs: list[torch.Generator] | torch.Generator,
                student: Any, skip_unfunded: bool = False) -> list[Task | None]:
        """Invert ``ids`` by (architecture, input domain) group, each model with its generator from
        ``rngs`` or all from one shared generator (``None``: skipped, it could not fund a task)."""
        cfg = self.config
        shared = isinstance(rngs, torch.Generator)
        gens = [rngs] * len(ids) if shared else list(rngs)
        groups: dict[tuple, list[int]] = {}  # positions in ids
        for pos, (i, e) in enumerate(zip(ids, entries)):
            groups.setdefault((e.architecture_key, self.domain(i)), []).append(pos)
        budgeted = isinstance(self.access, BlackBoxPool)  # one model at a time, each checked against its budget
        batched = self.inverter.batched and student is None and not budgeted
        tasks: list[Task | None] = [None] * len(ids)
        owed = 0  # teacher-logit queries of this step's tasks so far, asked for after every inversion
        for members in groups.values():
            if batched and len(members) > 1:
                per_model = {} if shared else {"generators": [gens[p] for p in members]}
                made = self.inverter.invert_many(
                    [self.teacher(ids[p]) for p in members], cfg.n_shot, cfg.n_query, gens[members[0]],
                    model_ids=[ids[p] for p in members], classes=[tuple(entries[p].class_ids) for p in members],
                    **per_model,
                )
            else:
                made = []
                for p in members:
                    if skip_unfunded and not self.fundable(ids[p], owed):
                        made.append(None)
                        continue
                    made.append(self._invert_one(ids[p], entries[p], gens[p], student, owed))
                    owed += self.budget.logit_queries()
            for p, t in zip(members, made):
                tasks[p] = t
        return tasks

    def _invert_one(self, i: int, entry: Any, generator: torch.Generator, student: Any, owed: int = 0) -> Task:
        """One task from model ``i``; an inverter that plans a budget leaves the queries of this task's teacher
        logits and of the ``owed`` ones of earlier tasks of the step (conservatively from both budgets)."""
        cfg = self.config
        budget = {} if self.budget.task_cost(i) is None else {"reserve": self.budget.logit_queries() + owed}
        return self.inverter.for_model(i).invert(self.teacher(i), cfg.n_shot, cfg.n_query, generator, model_id=i,
                                                 classes=tuple(entry.class_ids),
                                                 student=self.teachers.student_for(i, student), **budget)

    def _finish(self, task: Task, i: int, entry: Any, step: int, generator: torch.Generator) -> Task:
        cfg = self.config
        n_classes = int(task.support_y.max()) + 1
        if n_classes < cfg.n_way:
            raise ValueError(
                f"pool model {i} has {n_classes} classes, fewer than n_way={cfg.n_way}; lower n_way or use "
                "a pool whose models have at least n_way classes"
            )
        labels = list(range(n_classes))
        if n_classes > cfg.n_way or cfg.shuffle_labels:
            labels = torch.randperm(n_classes, generator=generator)[: cfg.n_way].tolist()
            task = restrict_task(task, labels)
        if self.teacher_logits:
            task = attach_teacher_logits(task, self.teacher(i), columns=labels)
        extra = dict(task.source.extra) if task.source else {}
        extra.setdefault("dataset", entry.dataset)
        return replace(task, source=replace(task.source, step=step, extra=extra))

    # ------------------------------------------------------------------ stream
    def next_batch(self, step: int, generator: torch.Generator) -> list[Task]:
        cfg = self.config
        if (cfg.replay > 0 and step % (cfg.replay + 1) != 0 and self.memory is not None
                and self.memory.can_sample(cfg.n_way, cfg.n_shot, cfg.n_query)):
            return self._replay_batch(generator)
        if self.memory is not None:
            n_new = plan_meta_batch(self.mix, cfg.meta_batch_size, self.memory, cfg.n_way, cfg.n_shot, cfg.n_query)[0]
        else:
            n_new = cfg.meta_batch_size
        recovered: list[tuple[int, Task]] = []
        while n_new > 0 and not recovered:  # every task of the step lost its funding to the ones before: again
            ids = dist.broadcast_object(self.budget.select(self.selector, n_new, generator))  # rank 0 decides
            recovered = self._recover(ids, step, generator, skip_unfunded=True)  # the agreement judges read these
        ids, raw = [i for i, _ in recovered], [t for _, t in recovered]  # in the teachers' domains
        self.reward.judge(self, ids, raw)
        new = [self.to_target(t, i) for t, i in zip(raw, ids)]
        self._inversion_metrics = {f"inversion/{k}": v for k, v in self.inverter.meta_update().items()}
        if self.memory is not None:
            batch = build_meta_batch(
                new, self.memory, self.mix, meta_batch_size=cfg.meta_batch_size, n_way=cfg.n_way,
                n_shot=cfg.n_shot, n_query=cfg.n_query, generator=generator,
            )
            distrusted = set(self.distrusted())
            for i, t in zip(ids, new):
                if i not in distrusted:
                    self.memory.add(t, step=step)
        else:
            batch = new
        self.reward.prepare(self, ids, new, generator)
        if cfg.augment.active:  # after the memory took the new tasks as recovered
            batch = [cfg.augment(t, generator) for t in batch]
        return batch

    def _replay_batch(self, generator: torch.Generator) -> list[Task]:
        """A meta-batch of memory (and interpolated) tasks only: nothing recovered, no selector reward."""
        cfg = self.config
        mix = replace(self.mix, new=0.0)
        batch = build_meta_batch([], self.memory, mix, meta_batch_size=cfg.meta_batch_size, n_way=cfg.n_way,
                                 n_shot=cfg.n_shot, n_query=cfg.n_query, generator=generator)
        self._inversion_metrics = {}
        self.reward.reset()
        return [cfg.augment(t, generator) for t in batch] if cfg.augment.active else batch

    def feedback(self, step: int, tasks: list[Task], metrics: dict[str, float], learner: Any) -> dict[str, float]:
        out: dict[str, float] = dict(self._inversion_metrics)
        out.update(self.reward.pay(self, learner))
        if self.memory is not None and self.config.forget_below > 0 and "reward" in out:
            out["memory/forgotten"] = float(self.memory.forget(self.distrusted()))
        return out

    def distrusted(self) -> list[int]:
        """Models whose selector weight is below ``forget_below / n_models`` (none if ``forget_below=0``)."""
        if self.config.forget_below <= 0:
            return []
        w = self.selector.weights()
        return torch.nonzero(w < self.config.forget_below / len(w)).view(-1).tolist()

    def agreement(self, i: int, task: Task) -> float | None:
        """Share of model ``i``'s recovered images of class ``c`` that other models advertising ``c`` call ``c``
        (see :func:`~dfml.datafree.rewards.agreement`); the judges' queries count in :attr:`judge_queries`."""
        return agreement(self, i, task)

    @property
    def cost(self) -> dict[str, float]:
        """The inverter's cost so far."""
        return self.inverter.cost.as_dict()

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "selector": self.selector.state_dict(),
            **self.reward.state_dict(),
            "cost": self.cost,
            "judge_queries": self.judge_queries,
        }
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        inverter = self.inverter.state_dict()
        if inverter:
            state["inverter"] = inverter
        if isinstance(self.access, BlackBoxPool):
            state["access"] = self.access.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.selector.load_state_dict(state["selector"])
        self.reward.load_state_dict(state)
        self.judge_queries = int(state.get("judge_queries", 0))
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        if "inverter" in state:
            self.inverter.load_state_dict(state["inverter"])
        if "access" in state and isinstance(self.access, BlackBoxPool):
            self.access.load_state_dict(state["access"])
        cost = self.inverter.cost
        for k, v in state.get("cost", {}).items():
            setattr(cost, k, type(getattr(cost, k))(v))
