"""The meta-test of a run: fixed episode lists, drawn once from ``eval.seed`` and reused, and the
scores of a meta-model on them (the meta-model's input domain, fine-tuning with ``eval.steps`` and
``eval.lr``, shared out across ``torchrun`` ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import distributed as dist
from .data import EpisodeList, InputDomain, convert_task, get_dataset
from .datafree.trainer import TrainConfig
from .eval import EvalResult, evaluate_sharded

if TYPE_CHECKING:
    from .experiment import ExperimentConfig, Progress


def episode_list(dataset: Any, path: Path, n: int, n_way: int, n_shot: int, n_query: int, seed: int) -> EpisodeList:
    """Load the episode list at ``path`` (checked against ``dataset``) or draw and save it."""
    if path.exists():
        episodes = EpisodeList.load(path)
        episodes.check(dataset)
        want = (n, n_way, n_shot, n_query)
        have = (len(episodes), episodes.n_way, episodes.n_shot, episodes.n_query)
        if have != want:
            raise ValueError(
                f"episode file {str(path)!r} holds {have} (episodes, way, shot, query) but {want} was asked; "
                "use another eval.episodes_dir or the matching settings"
            )
        return episodes
    episodes = EpisodeList.generate(dataset, n, n_way, n_shot, n_query, seed=seed)
    episodes.save(path)
    return episodes



def load_split(cfg: ExperimentConfig, split: str) -> Any:
    """The ``split`` of ``cfg``'s dataset, loaded with its ``data_options``."""
    return get_dataset(cfg.dataset, cfg.data_root, split, **cfg.data_options)



def meta_test_files(cfg: ExperimentConfig, episodes_dir: str | Path) -> dict[str, Path]:
    """The meta-test episode file of each score, ``{"<n_way>way_<shot>shot": path}``."""
    ev = cfg.eval
    return {f"{ev.n_way}way_{shot}shot": Path(episodes_dir) / f"test_{ev.n_way}w{shot}s_{ev.episodes}.json"
            for shot in ev.shots}



def meta_input_domain(data_domain: InputDomain, train: TrainConfig) -> InputDomain:
    """The meta-model's input domain: the dataset's, resized to ``train.meta_image_size`` if set."""
    return data_domain if train.meta_image_size is None else data_domain.resized(train.meta_image_size)



def meta_test(
    model: torch.nn.Module,
    cfg: ExperimentConfig,
    episodes_dir: str | Path,
    progress: Progress | None = None,
    first_n: int | None = None,
    test_ds: Any = None,
) -> dict[str, Any]:
    """Score ``model`` on ``cfg``'s fixed test episodes (loaded from, or drawn into, ``episodes_dir``).

    ``first_n`` scores only the first ``first_n`` episodes of each list (the same ones for every
    method), for settings too slow for the whole list. ``test_ds``: the meta-test split when the
    caller has loaded it already (else it is loaded here).

    Returns:
        ``{"<n_way>way_<shot>shot": EvalResult.as_dict(), ...}``, one entry per ``cfg.eval.shots``.
    """
    test_ds = test_ds if test_ds is not None else load_split(cfg, "test")
    ev, scores = cfg.eval, {}
    data_domain = InputDomain.of_dataset(test_ds)
    meta_domain = meta_input_domain(data_domain, cfg.train)
    files = meta_test_files(cfg, episodes_dir)
    for shot in ev.shots:
        with dist.main_first():  # rank 0 draws and writes the list, the others read it
            eps = episode_list(test_ds, files[f"{ev.n_way}way_{shot}shot"], ev.episodes, ev.n_way, shot, ev.n_query,
                               ev.seed)
        bar = None
        if progress is not None:
            n = len(eps) if first_n is None else min(first_n, len(eps))
            bar = lambda done, acc, s=shot, n=n: progress(f"test {s}-shot", done, n, {"acc": acc})  # noqa: E731
        tasks = (convert_task(t, data_domain, meta_domain) for t in eps.tasks(test_ds))
        res: EvalResult = evaluate_sharded(model, tasks, steps=ev.steps, lr=ev.lr,
                                           device=dist.device_for(cfg.device), progress=bar, first_n=first_n,
                                           calibration=ev.calibration, settings=_EVAL_SETTINGS)
        scores[f"{ev.n_way}way_{shot}shot"] = res.as_dict()
    return scores



_EVAL_SETTINGS = {"lr": "eval.lr", "steps": "eval.steps", "calibration.lr": "eval.calibration.lr"}
"""The configuration names of the meta-test fine-tune's settings, named by its errors."""
