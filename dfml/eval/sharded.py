"""The meta-test shared out across the ranks of a ``torchrun`` launch: each rank scores every ``K``-th
episode, and the per-episode scores gathered back in episode order give every rank the result one
process gets."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from .. import distributed as dist
from ..types import Task
from .protocol import check_degenerate, check_first_n, evaluate, evaluate_episodes, mean_ci, result_of, setting_names
from .stats import EvalResult, paired


def evaluate_sharded(
    model: nn.Module,
    tasks: Iterable[Task],
    *,
    first_n: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    **kwargs: Any,
) -> EvalResult:
    """:func:`evaluate` with the episodes dealt round-robin to the ranks of a ``torchrun`` launch.

    Episodes are scored independently, so gathering the per-episode accuracies back in episode
    order gives every rank the result one process gets (alone this *is* ``evaluate``). Every rank
    walks the whole episode iterable and scores every ``K``-th episode (``first_n`` applies to the
    whole list); ``progress`` is called on rank 0 only, with the approximate overall count.
    """
    if not dist.is_distributed():
        return evaluate(model, tasks, first_n=first_n, progress=progress, **kwargs)
    kwargs = {"steps": 10, "lr": 0.01, "method": "finetune", "device": None, "calibration": None, "settings": None,
              **kwargs}
    check_first_n(first_n)
    k, r = dist.world_size(), dist.rank()
    episodes = itertools.islice(tasks, first_n)
    mine = itertools.islice(episodes, r, None, k)
    bar = None
    if progress is not None and dist.is_main():
        bar = lambda done, acc: progress(done * k, acc)  # noqa: E731
    start = time.perf_counter()
    try:
        local, one_class = evaluate_episodes(model, mine, first_n=None, progress=bar, episode_start=r, episode_stride=k,
                                     **kwargs)
    except ValueError as err:
        if "no episodes" not in str(err):
            raise
        local, one_class = None, []  # fewer episodes than ranks
    parts = dist.all_gather_object(None if local is None else (local.per_episode, local.info, one_class))
    if all(p is None for p in parts):
        raise ValueError("no episodes to evaluate: tasks was empty")
    n = sum(len(p[0]) for p in parts if p is not None)
    scores: list[float] = [0.0] * n
    flags: list[bool] = [False] * n
    for rank_, p in enumerate(parts):
        if p is not None:
            scores[rank_::k] = p[0]
            flags[rank_::k] = p[2]
    info = dict(next(p[1] for p in parts if p is not None))
    if "calibration" in info:
        info["calibration"] = _merged_calibration([p[1]["calibration"] for p in parts if p is not None], k, scores)
    result = result_of(scores, time.perf_counter() - start, info)
    check_degenerate(result, flags, setting_names(kwargs["settings"]))
    if progress is not None and dist.is_main():
        progress(n, result.mean)
    return result



def _merged_calibration(parts: list[dict[str, Any]], k: int, scores: list[float]) -> dict[str, Any]:
    """The calibration info of the whole list from the ranks' (rank ``r`` scored episodes ``r, r+k, ...``)."""
    uncalibrated: list[float] = [0.0] * len(scores)
    for r, part in enumerate(parts):
        uncalibrated[r::k] = part["uncalibrated"]["per_episode"]
    mean, ci = mean_ci(uncalibrated)
    n_pseudo = sum(p["pseudo_episodes"] for p in parts)
    pseudo = sum(p["pseudo_acc"] * p["pseudo_episodes"] for p in parts if p["pseudo_episodes"])
    return {
        **parts[0],
        "uncalibrated": {"mean": mean, "ci95": ci, "per_episode": uncalibrated},
        "paired": paired(scores, uncalibrated) if len(scores) > 1 else None,
        "pseudo_acc": pseudo / n_pseudo if n_pseudo else None,
        "pseudo_episodes": n_pseudo,
        "teacher_queries": sum(p["teacher_queries"] for p in parts),
        "seconds": sum(p["seconds"] for p in parts),
    }
