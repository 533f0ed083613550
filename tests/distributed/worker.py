"""What every rank runs in the distributed tests, and what the tests run in one process to compare.

Launched as ``python -m torch.distributed.run --nproc-per-node K worker.py JOBS_JSON``: each job is
``{"kind": "build" | "train", ...}`` and the jobs run in order in the same process group. A job
with ``"kill": {...}`` SIGKILLs one rank at a given point, as a crash or ``kill -9`` would.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from dfml import distributed as dist
from dfml.data import EpisodeList
from dfml.data.toy import make_toy_world
from dfml.inversion import PixelInversionConfig, PixelInverter
from dfml.memory import MemoryConfig, MetaBatchMix, TaskMemory
from dfml.meta import MAML
from dfml.datafree import DataFreeStream, StreamConfig
from dfml.datafree import MetaTrainer, TrainConfig
from dfml.models import build_model, use_batch_stats
from dfml.pool import ModelPool, pretrain_pool
from dfml.pool.toy import toy_pretrain_config
from dfml.runs import RunDir
from dfml.selection import ReliabilityWeigher

POOL_MODELS = 6
META_BATCH = 5  # not a multiple of 2 ranks: the shares are 3 and 2 tasks
STEPS = 6


class Stop(Exception):
    """A stand-in for a kill when the job runs inside the test process."""


def _stopper(kill: dict[str, Any] | None, at: str) -> Any:
    """``at`` is "model" or "step"; SIGKILL (under a launch) or raise :class:`Stop` (alone) when reached."""

    def check(value: int, *_: Any) -> None:
        if kill is None or value != kill[at] or dist.rank() != kill.get("rank", 0):
            return
        if dist.is_distributed():
            os.kill(os.getpid(), signal.SIGKILL)
        raise Stop(f"stopped at {at} {value}")

    return check


def threads_file(out: str | Path, rank: int) -> Path:
    """Where :func:`build` notes the intra-op thread count rank ``rank`` built ``out`` with (beside the pool)."""
    out = Path(out)
    return out.parent / f"{out.name}.threads.{rank}"


def build(out: str | Path, kill: dict[str, Any] | None = None) -> ModelPool:
    """A toy pool of ``POOL_MODELS`` MLPs (3 epochs); ``kill={"model": i, "rank": r}`` stops after model ``i``.

    Each process notes its intra-op thread count in :func:`threads_file`: bit-identical pools are
    promised only between processes with the same count (docs/distributed.md).
    """
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    threads_file(out, dist.rank()).write_text(str(torch.get_num_threads()))
    stop = _stopper(kill, "model")
    cfg = toy_pretrain_config(n_models=POOL_MODELS, epochs=3, seed=3)
    return pretrain_pool(make_toy_world()["train"], out, cfg, progress=lambda i, n, e: stop(i))


def trainer(pool_dir: str | Path, run_dir: str | Path, steps: int = STEPS) -> MetaTrainer:
    """Second-order MAML in float64 on a data-free stream (pixel inversion, reliability weigher, memory)."""
    world = make_toy_world()
    pool = ModelPool(pool_dir)
    torch.manual_seed(0)
    net = build_model("mlp", in_features=32, num_classes=5, hidden=[32, 32]).double()
    learner = MAML(use_batch_stats(net), inner_steps=2, inner_lr=0.1)
    stream = DataFreeStream(
        pool, PixelInverter((32,), PixelInversionConfig(steps=5)),
        StreamConfig(n_way=5, n_shot=1, n_query=3, meta_batch_size=META_BATCH),
        selector=ReliabilityWeigher(len(pool), lr=0.1),
        memory=TaskMemory(MemoryConfig(capacity_per_class=8)),
        mix=MetaBatchMix(new=2, memory=2, interpolated=1),
        learner=learner,
    )
    cfg = TrainConfig(n_way=5, n_shot=1, n_query=3, meta_batch_size=META_BATCH, steps=steps, inner_steps=2,
                      inner_lr=0.1, outer_lr=1e-2, val_every=3, val_episodes=6, checkpoint_every=2)
    eps = EpisodeList.generate(world["val"], cfg.val_episodes, 5, 1, 3, seed=1)
    with dist.main_first():
        run = RunDir(run_dir, {"test": "distributed meta-training"})
    return MetaTrainer(learner.network, stream, lambda: eps.tasks(world["val"]), cfg, run=run, learner=learner)


def train(pool_dir: str | Path, run_dir: str | Path, kill: dict[str, Any] | None = None) -> dict[str, Any]:
    """Meta-train (resuming from ``run_dir``); rank 0 saves ``final.pt``: learner, stream state, metrics."""
    t = trainer(pool_dir, run_dir)
    stop = _stopper(kill, "step")
    summary = t.fit(progress=lambda step, record: stop(step))
    final = {"learner": t.learner.state_dict(), "selector": t.stream.selector.state_dict(),
             "memory": t.stream.memory.state_dict(), "cost": t.stream.cost, "metrics": t.run.read_metrics(),
             "summary": {k: v for k, v in summary.items() if k != "seconds"}, "world_size": dist.world_size()}
    if dist.is_main():
        torch.save(final, Path(run_dir) / "final.pt")
    return final


def updates(out: str | Path) -> None:
    """Data-parallel meta-steps against one-process meta-steps on the same tasks (float64), B = 1..4.

    Rank 0 writes ``{B: max |difference|}`` of the parameters (a learnt inner rate included) and
    of the metrics; with B = 1 one rank has no task at all. Key ``"alignment"``: FREE's gradient
    alignment (not a sum over tasks) run replicated against one process.
    """
    from dfml.meta import AlignmentConfig, GradientAlignment
    from dfml.meta.parallel import data_parallel_update, replicated
    from dfml.types import Task

    g = torch.Generator().manual_seed(0)
    found: dict[int | str, float] = {}
    alignment = GradientAlignment(AlignmentConfig(task_lr=0.1, task_steps=2))
    cases = [(b, lambda l, t, o: l.meta_step(t, o), data_parallel_update) for b in (1, 2, 3, 4)]
    cases.append(("alignment", alignment, replicated(alignment)))
    for key, alone, parallel in cases:
        n = 3 if key == "alignment" else key
        tasks = [Task(torch.randn(5, 8, generator=g), torch.arange(5), torch.randn(10, 8, generator=g),
                      torch.arange(5).repeat(2)) for _ in range(n)]
        learners, metrics = [], []
        for update in (alone, parallel):
            torch.manual_seed(1)
            net = build_model("mlp", in_features=8, num_classes=5, hidden=[6]).double()
            learner = MAML(net, inner_steps=1, inner_lr=0.3, learn_inner_lr=True)
            opt = torch.optim.Adam(learner.parameters(), lr=0.1)
            for _ in range(2):
                m = update(learner, tasks, opt)
            learners.append(learner.state_dict())
            metrics.append(m)
        diff = max(float((learners[0][k] - learners[1][k]).abs().max()) for k in learners[0])
        found[key] = max(diff, abs(metrics[0]["loss"] - metrics[1]["loss"]), abs(metrics[0]["acc"] - metrics[1]["acc"]))
    if dist.is_main():
        Path(out).write_text(json.dumps(found))


def experiment(pool_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """The ``maml`` recipe through ``run_experiment`` (sharded bank inversion, validation and meta-test)."""
    from dfml.experiment import experiment_config, run_experiment

    cfg = experiment_config("maml", {
        "pool": str(pool_dir), "dataset": "toy",
        "train": {"steps": 4, "meta_batch_size": 3, "n_query": 3, "val_every": 2, "val_episodes": 5,
                  "checkpoint_every": 2, "inner_steps": 1},
        "datafree": {"synthetic": {"per_class": 6}, "pixel": {"steps": 5}},
        "eval": {"episodes": 7, "shots": [1], "n_query": 3},
    })
    return run_experiment(cfg, out)


def calibrated(out: str | Path | None = None) -> dict[str, Any]:
    """Inversion-calibrated meta-test (ICFIL) of a fixed toy MLP on 5 episodes (2 ranks: 3 + 2)."""
    from dfml.eval import CalibrationConfig, evaluate_sharded
    from dfml.inversion import PixelBankConfig

    torch.manual_seed(2)
    net = build_model("mlp", in_features=32, num_classes=5, hidden=[16])
    test = make_toy_world()["test"]
    tasks = EpisodeList.generate(test, 5, 5, 1, 3, seed=4).tasks(test)
    cal = CalibrationConfig(enabled=True, steps=2, inversion=PixelBankConfig(per_class=2, steps=3))
    res = evaluate_sharded(net, tasks, steps=2, lr=0.1, calibration=cal)
    found = {"per_episode": res.per_episode, "calibration": res.info["calibration"]}
    if out is not None and dist.is_main():
        Path(out).write_text(json.dumps(found))
    return found


def _recipe_settings() -> dict[str, Any]:
    """tests/recipes/test_paper_recipes.py's tiny settings, with a meta-batch of 3 (2 ranks: 2 + 1 tasks)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "dfml_test_paper_recipes", Path(__file__).resolve().parents[1] / "recipes" / "test_paper_recipes.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return {**module.TINY, "train": {**module.TINY["train"], "meta_batch_size": 3, "checkpoint_every": 2}}


def recipe(name: str, pool_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """A paper recipe from its preset at tiny sizes."""
    from dfml.experiment import experiment_config, run_experiment

    return run_experiment(experiment_config(name, _recipe_settings(), {"pool": str(pool_dir)}), out)


def main(jobs: list[dict[str, Any]]) -> None:
    torch.set_num_threads(1)
    # a generous collective timeout: on a loaded machine (2 cores, benchmarks running) one rank can wait
    # minutes at a barrier while the other writes. Twice under such load rank 0 aborted in C++
    # ("terminate called without an active exception", no Python traceback); a gloo timeout at 120 s is
    # the suspected cause, not a confirmed one
    with dist.launched(timeout_s=900):
        assert dist.world_size() == int(os.environ.get("WORLD_SIZE", 1)), "the process group did not start"
        for job in jobs:
            if job["kind"] == "build":
                build(job["out"], job.get("kill"))
            elif job["kind"] == "updates":
                updates(job["out"])
            elif job["kind"] == "experiment":
                experiment(job["pool"], job["out"])
            elif job["kind"] == "calibrated":
                calibrated(job["out"])
            elif job["kind"] == "recipe":
                recipe(job["recipe"], job["pool"], job["out"])
            else:
                train(job["pool"], job["run"], job.get("kill"))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
