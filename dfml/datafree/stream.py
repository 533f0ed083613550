"""The data-free task stream: select models, invert them, remember the tasks, mix the meta-batch.

One step of :class:`DataFreeStream` (a :class:`~dfml.meta.stream.TaskStream` for the
:class:`~dfml.meta.trainer.MetaTrainer`)::

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

Query budgets. With budgeted black-box access (a :class:`~dfml.inversion.BlackBoxPool`) and an
inverter that stops on its budget (``on_budget="stop"``), a model whose remaining allowance cannot
fund one more task (a probe, one zeroth-order step and, when distilling, its teacher logits) is
never drawn; a task that can no longer be funded when its turn comes in a step (the pool's total
spent by the step's earlier tasks) is left out of the step; the inverter leaves the teacher logits'
queries unspent, so distillation never asks a teacher for more than remains; and when no model can
fund a task the stream raises :class:`~dfml.meta.stream.StreamExhausted`: meta-training ends early.

References:
    Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023 (memory, interpolation
    and a policy-gradient reliability weigher in one loop).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .. import distributed as dist
from ..data.domain import InputDomain, convert_inputs, convert_task
from ..inversion.blackbox import BlackBoxPool
from ..inversion.losses import DiffAugment
from ..inversion.sharded import cost_parts, is_stateless, shard_map, sync_cost
from ..meta.distill import attach_teacher_logits
from ..memory import MetaBatchMix, TaskMemory, build_meta_batch, plan_meta_batch
from ..pool import ModelPool
from ..selection import Selector, UniformSelector, improvement_reward
from ..types import Task, TaskSource
from .stream import StreamExhausted

log = logging.getLogger(__name__)

__all__ = ["DataFreeStream", "StreamConfig", "restrict_task"]

REWARDS = ("heldout", "agreement", "none")


@dataclass(frozen=True)
class TaskAugment:
    """Random crop and flip of every task's images as the meta-learner sees them (new, replayed and
    interpolated tasks alike; the memory keeps the images as recovered).

    Each support and query image gets its own crop (zero padding of ``pad`` pixels in the meta-model's
    input space, then a window of the original size) and, with ``flip``, a horizontal flip with
    probability 1/2, drawn from the step's random generator. Vector inputs are left alone.

    Attributes:
        pad: padding of the random crop in pixels (``0``: no crop).
        flip: random horizontal flips.
    """

    pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError(f"task_augment.pad must be an integer >= 0, got {self.pad!r}")

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip

    def __call__(self, task: Task, generator: torch.Generator) -> Task:
        if not self.active or task.support_x.dim() != 4:
            return task
        aug = DiffAugment(pad=self.pad, flip=self.flip)
        return replace(task, support_x=aug(task.support_x, generator), query_x=aug(task.query_x, generator))


@dataclass(frozen=True)
class StreamConfig:
    """How the data-free stream builds each meta-batch.

    Attributes:
        n_way, n_shot, n_query: task shape (a teacher with more classes gives a random ``n_way`` of them).
        meta_batch_size: tasks per step (new + memory + interpolated, see ``mix``).
        reward: ``"heldout"``: the selector is rewarded with the meta-learner's loss improvement on
            tasks recovered earlier from other models; ``"agreement"``: each selected model is
            rewarded with how often the *other* pool models that advertise one of its classes
            classify its recovered images of that class as that class (pools with overlapping label
            sets; a model no other model can judge is not updated); ``"none"``: no reward. Both
            rewards are data-free.
        reward_tasks: how many of those held-out tasks score each update.
        teacher_cache: loaded teachers kept in memory (least recently used are dropped).
        forget_below: models whose selector weight is below ``forget_below / n_models`` are
            distrusted: their tasks are not stored in the memory and, after each selector update,
            their stored examples are forgotten (``0``: keep everything).
        augment: crop/flip of each meta-batch's images (see :class:`TaskAugment`; off by default).
        replay: after each step that recovers new tasks, this many steps whose meta-batch is memory
            (and interpolated) tasks only, so the memory is replayed without paying for inversion
            (needs a memory; a step whose memory cannot serve a task yet recovers new ones instead).
    """

    n_way: int = 5
    n_shot: int = 1
    n_query: int = 15
    meta_batch_size: int = 4
    reward: str = "heldout"
    reward_tasks: int = 4
    teacher_cache: int = 32
    forget_below: float = 0.0
    augment: TaskAugment = TaskAugment()
    replay: int = 0

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot", "n_query", "meta_batch_size", "reward_tasks", "teacher_cache"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.forget_below < 1.0:
            raise ValueError(f"stream.forget_below must be in [0, 1), got {self.forget_below}")
        if isinstance(self.replay, bool) or not isinstance(self.replay, int) or self.replay < 0:
            raise ValueError(f"stream.replay must be an integer >= 0, got {self.replay!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"stream.reward must be one of {REWARDS}, got {self.reward!r}")


def restrict_task(task: Task, labels: list[int]) -> Task:
    """The sub-task of ``task`` made of the given labels (relabelled ``0..len(labels)-1`` in that order)."""
    def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for new, old in enumerate(labels):
            m = y == old
            xs.append(x[m])
            ys.append(torch.full((int(m.sum()),), new, dtype=y.dtype, device=y.device))
        return torch.cat(xs), torch.cat(ys)

    sx, sy = pick(task.support_x, task.support_y)
    qx, qy = pick(task.query_x, task.query_y)
    source = task.source or TaskSource()
    classes = tuple(source.classes[k] for k in labels) if source.classes else ()
    return Task(sx, sy, qx, qy, replace(source, classes=classes))


class DataFreeStream:
    """Meta-batches recovered from a model pool (see the module docstring).

    Args:
        pool: the model pool (teachers are loaded lazily and cached).
        inverter: anything with ``invert(teacher, n_shot, n_query, generator, *, model_id, classes,
            student)`` returning a :class:`~dfml.types.Task`, and a ``cost``.
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
        domains, target: the input domain of every pool model and the meta-model's (pools whose
            models take other inputs than the meta-model, e.g. several datasets). A model is
            inverted in its own domain (the inverter routes by model id, see
            :class:`~dfml.inversion.DomainInverters`) and its task carried to ``target`` after
            its teacher-side uses (logits, agreement); a student sees ``target`` inputs. ``None``:
            every model takes the meta-model's inputs.
        device: where teachers run and tasks are made.
    """

    def __init__(
        self,
        pool: ModelPool,
        inverter: Any,
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
    ) -> None:
        if not hasattr(inverter, "invert"):
            raise TypeError(f"inverter must have an invert(...) method, got {type(inverter).__name__}")
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
        if (domains is None) != (target is None):
            raise ValueError("give domains= (one per pool model) and target= (the meta-model's) together, or neither")
        if domains is not None and len(domains) != len(pool):
            raise ValueError(f"domains has {len(domains)} entries but the pool has {len(pool)} models; give one each")
        self.domains = None if domains is None else list(domains)
        self.target = target
        self.device = torch.device(device)
        self._teachers: OrderedDict[int, nn.Module] = OrderedDict()
        self.recent: dict[int, Task] = {}  # heldout reward only: the last task recovered from each model
        self._inversion_metrics: dict[str, float] = {}
        self._pending: tuple[list[int], dict[str, torch.Tensor], list[Task]] | None = None
        self._agreement: list[tuple[int, float]] = []
        self.judge_queries = 0  # teacher queries spent judging other models' tasks (agreement reward)

    # ----------------------------------------------------------------- teachers
    def teacher(self, i: int) -> nn.Module:
        """Model ``i`` of the pool, loaded once and kept while recently used."""
        if i in self._teachers:
            self._teachers.move_to_end(i)
            return self._teachers[i]
        model = self.pool.load(i, device=self.device)
        if self.access is not None:
            model = self.access(model, i)
        self._teachers[i] = model
        while len(self._teachers) > self.config.teacher_cache:
            self._teachers.popitem(last=False)
        return model

    def recover(self, i: int, step: int, generator: torch.Generator) -> Task:
        """One pseudo task from model ``i``: its own classes (``n_way`` of them), labels ``0..n_way-1``."""
        return self.recover_many([i], step, generator)[0]

    def recover_many(self, ids: list[int], step: int, generator: torch.Generator) -> list[Task]:
        """One pseudo task per model in ``ids``, in the meta-model's input domain.

        A stateless inverter (pixels, per-model generators) inverts each model with its own
        generator (one draw per model from ``generator``), so under ``torchrun`` every rank inverts
        its share of ``ids`` and the tasks are gathered in order: every rank ends with the same
        tasks, whatever the number of ranks (see :mod:`dfml.inversion.sharded`). Stateful
        inverters (pixel bank, meta-generator) and budgeted black-box access run whole on every
        rank. Inverters with ``invert_many`` recover the models of one architecture and input
        domain in one batched call (stacked teachers) when no student is involved.
        """
        return [self.to_target(t, i) for i, t in self._recover(ids, step, generator)]

    def domain(self, i: int) -> InputDomain | None:
        """The input domain of model ``i`` (``None`` when the stream has no domains)."""
        return None if self.domains is None else self.domains[i]

    def to_target(self, task: Task, i: int) -> Task:
        """``task``, recovered from model ``i`` in its domain, carried to the meta-model's."""
        if self.domains is None or self.target is None:
            return task
        return convert_task(task, self.domains[i], self.target)

    def _recover(self, ids: list[int], step: int, generator: torch.Generator,
                 skip_unfunded: bool = False) -> list[tuple[int, Task]]:
        """``(model id, task)`` in each teacher's own domain (see :meth:`recover_many`); with
        ``skip_unfunded``, models that cannot fund a task when their turn comes are left out."""
        entries = [self.pool.entry(i) for i in ids]
        student = self.student() if self.student is not None else None
        if is_stateless(self.inverter) and self.access is None:
            costs = cost_parts(self.inverter)
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
        batched = hasattr(self.inverter, "invert_many") and student is None and not budgeted
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
                    owed += self._logit_queries()
            for p, t in zip(members, made):
                tasks[p] = t
        return tasks

    def _invert_one(self, i: int, entry: Any, generator: torch.Generator, student: Any, owed: int = 0) -> Task:
        """One task from model ``i``; an inverter that plans a budget leaves the queries of this task's teacher
        logits and of the ``owed`` ones of earlier tasks of the step (conservatively from both budgets)."""
        cfg = self.config
        budget = {} if self._task_cost(i) is None else {"reserve": self._logit_queries() + owed}
        return self._inverter_of(i).invert(self.teacher(i), cfg.n_shot, cfg.n_query, generator, model_id=i,
                                           classes=tuple(entry.class_ids), student=self._student_for(i, student),
                                           **budget)

    def _student_for(self, i: int, student: Any) -> Any:
        """``student`` as model ``i``'s inverter must call it: on inputs of model ``i``'s domain."""
        source = self.domain(i)
        if student is None or source is None or self.target is None or source == self.target:
            return student
        target = self.target
        if isinstance(student, nn.Module):
            return _DomainStudent(student, source, target)
        return lambda sx, sy, qx: student(convert_inputs(sx, source, target), sy, convert_inputs(qx, source, target))

    def _finish(self, task: Task, i: int, entry: Any, step: int, generator: torch.Generator) -> Task:
        cfg = self.config
        n_classes = int(task.support_y.max()) + 1
        if n_classes < cfg.n_way:
            raise ValueError(
                f"pool model {i} has {n_classes} classes, fewer than n_way={cfg.n_way}; lower n_way or use "
                "a pool whose models have at least n_way classes"
            )
        labels = list(range(n_classes))
        if n_classes > cfg.n_way:
            labels = torch.randperm(n_classes, generator=generator)[: cfg.n_way].tolist()
            task = restrict_task(task, labels)
        if self.teacher_logits:
            task = attach_teacher_logits(task, self.teacher(i), columns=labels)
        extra = dict(task.source.extra) if task.source else {}
        extra.setdefault("dataset", entry.dataset)
        return replace(task, source=replace(task.source, step=step, extra=extra))

    # ------------------------------------------------------------------ budgets
    def _inverter_of(self, i: int) -> Any:
        """The inverter that inverts model ``i`` (its domain's, when the inverter routes by domain)."""
        route = getattr(self.inverter, "for_model", None)
        return route(i) if route is not None else self.inverter

    def _logit_queries(self) -> int:
        """Queries of one task's teacher logits (support and query sets of ``n_way`` classes), or 0."""
        cfg = self.config
        return cfg.n_way * (cfg.n_shot + cfg.n_query) if self.teacher_logits else 0

    def _task_cost(self, i: int) -> int | None:
        """The fewest queries a task from model ``i`` costs, when budgeted access and an inverter that stops
        on its budget make that a plan (``None``: nothing is planned; a budget that binds raises)."""
        if not isinstance(self.access, BlackBoxPool):
            return None
        plan = getattr(self._inverter_of(i), "task_queries", None)
        cfg = self.config
        return None if plan is None else plan(self.pool.entry(i).n_way, cfg.n_shot, cfg.n_query, self._logit_queries())

    def fundable(self, i: int, owed: int = 0) -> bool:
        """Whether model ``i``'s remaining query allowance funds one more task, beyond ``owed`` queries already
        promised (always, without a plan)."""
        cost = self._task_cost(i)
        return cost is None or self.access.can_afford(i, cost + owed)

    def _select(self, n: int, generator: torch.Generator) -> list[int]:
        """``n`` model ids from the selector, redrawing past models that cannot fund a task.

        Raises:
            StreamExhausted: no model can fund a task (nothing is drawn or spent).
        """
        fundable = [self.fundable(i) for i in range(len(self.pool))]
        if not any(fundable):
            raise StreamExhausted(*self._exhausted_reason())
        ids: list[int] = []
        for _ in range(100 * n):  # more new tasks than one selection gives (pool, TGR group): draw again
            if len(ids) >= n:
                break
            ids += [i for i in self.selector.select(min(n - len(ids), self.selector.max_select), generator)
                    if fundable[i]]
        if not ids:
            raise StreamExhausted(f"the selector drew only models whose query budget cannot fund a task in {100 * n} "
                                  "selections")
        return ids

    def _exhausted_reason(self) -> tuple[str, str]:
        """Why no model can fund a task (the cheapest task's cost against the budget that binds), and the fix."""
        cheapest = min(c for c in (self._task_cost(i) for i in range(len(self.pool))) if c is not None)
        parts = "a probe, one zeroth-order step" + (" and the teacher logits" if self.teacher_logits else "")
        total = self.access.total
        cheaper = "or make a task cheaper (fewer directions datafree.blackbox.q, fewer train.n_query)"
        if total.limit is not None and total.remaining < cheapest:
            where = f"the pool's total budget (datafree.access.total) has {total.remaining} of {total.limit} left"
            fix = f"raise datafree.access.total to at least {total.spent + cheapest} {cheaper}"
        else:
            most = max(self.access.remaining(i) or 0 for i in range(len(self.pool)))
            where = (f"no model's own budget (datafree.access.per_model) has that many left (at most {most} of "
                     f"{self.access.per_model})")
            fix = f"raise datafree.access.per_model to at least {cheapest} {cheaper}"
        reason = f"the query budgets cannot fund another task: one costs at least {cheapest} queries ({parts})"
        return f"{reason} and {where}", fix

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
            ids = dist.broadcast_object(self._select(n_new, generator))  # rank 0 decides (the ranks draw alike)
            recovered = self._recover(ids, step, generator, skip_unfunded=True)  # the agreement judges read these
        ids, raw = [i for i, _ in recovered], [t for _, t in recovered]  # in the teachers' domains
        self._agreement = dist.broadcast_object(
            [(i, r) for i, t in zip(ids, raw) if (r := self.agreement(i, t)) is not None]
            if cfg.reward == "agreement" else [])
        new = [self.to_target(t, i) for t, i in zip(raw, ids)]
        self._inversion_metrics = {}
        if hasattr(self.inverter, "meta_update"):  # a meta-generator learns from this step's adaptations
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
        self._pending = None
        if cfg.reward == "heldout" and self.learner is not None and ids:
            held = [t for m, t in self.recent.items() if m not in set(ids)]
            if held:
                order = torch.randperm(len(held), generator=generator)[: cfg.reward_tasks].tolist()
                before = {k: v.detach().clone() for k, v in self.learner.params().items()}
                self._pending = (ids, before, [held[k] for k in order])
        if cfg.reward == "heldout":
            self.recent.update(zip(ids, new))
        if cfg.augment.active:  # after the memory took the new tasks as recovered
            batch = [cfg.augment(t, generator) for t in batch]
        return batch

    def _replay_batch(self, generator: torch.Generator) -> list[Task]:
        """A meta-batch of memory (and interpolated) tasks only: nothing recovered, no selector reward."""
        cfg = self.config
        mix = replace(self.mix, new=0.0)
        batch = build_meta_batch([], self.memory, mix, meta_batch_size=cfg.meta_batch_size, n_way=cfg.n_way,
                                 n_shot=cfg.n_shot, n_query=cfg.n_query, generator=generator)
        self._inversion_metrics, self._pending, self._agreement = {}, None, []
        return [cfg.augment(t, generator) for t in batch] if cfg.augment.active else batch

    def feedback(self, step: int, tasks: list[Task], metrics: dict[str, float], learner: Any) -> dict[str, float]:
        out: dict[str, float] = dict(self._inversion_metrics)
        if self._pending is not None:
            ids, before, held = self._pending
            reward = dist.broadcast_object(improvement_reward(learner.loss, before, learner.params(), held))
            out["reward"] = reward
            out.update({f"selector/{k}": v for k, v in self.selector.update(ids, reward).items()})
            self._pending = None
        if self._agreement:
            for i, r in self._agreement:
                metrics = self.selector.update([i], r)
            out["reward"] = sum(r for _, r in self._agreement) / len(self._agreement)
            out.update({f"selector/{k}": v for k, v in metrics.items() if k.startswith("w/") or k == "max_weight"})
            self._agreement = []
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
        """Share of model ``i``'s recovered images of class ``c`` that other models advertising ``c`` call ``c``.

        ``task`` is in model ``i``'s input domain; a judge of another domain sees the images
        converted to its own. Only models of model ``i``'s dataset judge (class ids are per dataset),
        and, on a query budget the inverter stops within, only those that can still pay for it.
        ``None`` when no other model advertises any of the task's classes.
        """
        if task.source is None or not task.source.classes:
            return None
        x = torch.cat([task.support_x, task.query_x])
        y = torch.cat([task.support_y, task.query_y])
        hits, total = 0.0, 0
        for k in range(len(self.pool)):
            if k == i:
                continue
            theirs = list(self.pool.entry(k).class_ids)
            shared = [(label, theirs.index(c)) for label, c in enumerate(task.source.classes) if c in theirs]
            if not shared or self.pool.entry(k).dataset != self.pool.entry(i).dataset:
                continue
            rows = torch.cat([torch.nonzero(y == label).view(-1) for label, _ in shared])
            if self._task_cost(k) is not None and not self.access.can_afford(k, int(rows.numel())):
                continue  # a judge whose query budget is spent (on_budget='stop') does not judge
            want = torch.cat([torch.full((int((y == label).sum()),), col) for label, col in shared]).to(y.device)
            seen = x[rows]
            if self.domains is not None and self.domains[k] != self.domains[i]:
                seen = convert_inputs(seen, self.domains[i], self.domains[k])
            with torch.no_grad():
                pred = self.teacher(k)(seen).argmax(-1)
            self.judge_queries += int(rows.numel())
            hits += float((pred == want).sum())
            total += int(rows.numel())
        return hits / total if total else None

    @property
    def cost(self) -> dict[str, float]:
        """The inverter's cost so far."""
        cost = getattr(self.inverter, "cost", None)
        return cost.as_dict() if cost is not None else {}

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "selector": self.selector.state_dict(),
            "recent": {i: _task_state(t) for i, t in self.recent.items()},
            "cost": self.cost,
            "judge_queries": self.judge_queries,
        }
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        if hasattr(self.inverter, "state_dict"):
            state["inverter"] = self.inverter.state_dict()
        if hasattr(self.access, "state_dict"):
            state["access"] = self.access.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.selector.load_state_dict(state["selector"])
        self.recent = {int(i): _task_from_state(s) for i, s in state["recent"].items()}
        self.judge_queries = int(state.get("judge_queries", 0))
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
        if "inverter" in state and hasattr(self.inverter, "load_state_dict"):
            self.inverter.load_state_dict(state["inverter"])
        if "access" in state and hasattr(self.access, "load_state_dict"):
            self.access.load_state_dict(state["access"])
        cost = getattr(self.inverter, "cost", None)
        if cost is not None:
            for k, v in state.get("cost", {}).items():
                setattr(cost, k, type(getattr(cost, k))(v))


def _task_state(t: Task) -> dict[str, Any]:
    s = t.source or TaskSource()
    return {
        "support_x": t.support_x, "support_y": t.support_y, "query_x": t.query_x, "query_y": t.query_y,
        "model_id": s.model_id, "classes": list(s.classes), "step": s.step, "kind": s.kind,
    }


def _task_from_state(s: dict[str, Any]) -> Task:
    source = TaskSource(model_id=s["model_id"], classes=tuple(s["classes"]), step=s["step"], kind=s["kind"])
    return Task(s["support_x"], s["support_y"], s["query_x"], s["query_y"], source)


class _DomainStudent(nn.Module):
    """A student module that takes inputs of ``source`` and sees them in ``target`` (its own domain)."""

    def __init__(self, student: nn.Module, source: InputDomain, target: InputDomain) -> None:
        super().__init__()
        self.student, self.source, self.target = student, source, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(convert_inputs(x, self.source, self.target))
