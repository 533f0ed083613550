"""One experiment: a recipe on a pool, selected on meta-validation, scored once on fixed test episodes.

``run_experiment`` is what ``dfml train`` and ``dfml eval`` call, and what the demo and benchmark
scripts call for each recipe. It writes a run directory (see :mod:`dfml.runs`) and returns the
results. Meta-test episodes are drawn once from ``eval.seed`` and saved (indices only) so that
every recipe is scored on exactly the same tasks; the test split is touched only at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import to_dict
from .data import EpisodeList, InputDomain, convert_task, get_dataset
from .eval import EvalResult, evaluate
from .meta.trainer import TrainConfig
from .pool import ModelPool
from .config import apply_mapping
from .recipes import RECIPES, DataFreeConfig, RecipeContext, preset
from .recipes.base import describe_architecture
from .runs import RunDir, atomic_torch_save

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class EvalConfig:
    """The meta-test protocol (the DFML papers': 600 episodes, 15 queries, 10 steps at lr 0.01).

    Attributes:
        n_way: classes per episode.
        shots: support examples per class; one score per value.
        n_query: query examples per class.
        episodes: number of fixed meta-test episodes.
        steps, lr: fine-tuning on each episode's support set.
        seed: seed of the episode lists (same seed, same episodes, for every recipe).
        episodes_dir: where episode lists are kept and reused (default: inside the run directory).
    """

    n_way: int = 5
    shots: tuple[int, ...] = (1, 5)
    n_query: int = 15
    episodes: int = 600
    steps: int = 10
    lr: float = 0.01
    seed: int = 0
    episodes_dir: str | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A full experiment.

    Attributes:
        recipe: a name from ``dfml.recipes.RECIPES`` (``dfml train --help`` lists them).
        pool: the pool directory.
        dataset: the target domain for meta-validation/test (``cifar_fs``, ``mini_imagenet``, ``toy``).
        data_root: where the dataset lives (not needed for ``toy``).
        device: ``cpu`` or ``cuda[:k]``.
    """

    recipe: str = "maml"
    pool: str = ""
    dataset: str = "toy"
    data_root: str | None = None
    device: str = "cpu"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    datafree: DataFreeConfig = field(default_factory=DataFreeConfig)


def experiment_config(recipe: str, *layers: dict[str, Any]) -> ExperimentConfig:
    """The configuration of ``recipe``: defaults, then the recipe's preset, then each mapping in ``layers``.

    Example:
        >>> cfg = experiment_config("robust", {"pool": "pools/p", "train": {"steps": 100}})
    """
    cfg = apply_mapping(ExperimentConfig(recipe=recipe), preset(recipe))
    for layer in layers:
        cfg = apply_mapping(cfg, layer)
    return cfg


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


def run_experiment(cfg: ExperimentConfig, out: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) ``cfg`` in the run directory ``out`` and return its results.

    A run that already finished returns its saved ``results.json`` without redoing anything.
    """
    recipe = RECIPES.get(cfg.recipe)
    if not cfg.pool:
        raise ValueError("no pool given: pass --pool DIR (build one with `dfml pool build`)")
    pool = ModelPool(cfg.pool)
    run = RunDir(out, to_dict(cfg))
    done = run.path / "results.json"
    if done.exists():
        import json

        log.info("%s already finished; returning its results", run.path)
        return json.loads(done.read_text())
    start = time.perf_counter()
    val_ds = get_dataset(cfg.dataset, cfg.data_root, "val")
    tr = cfg.train
    episodes_dir = Path(cfg.eval.episodes_dir) if cfg.eval.episodes_dir else run.path / "episodes"
    val_eps = episode_list(
        val_ds,
        episodes_dir / f"val_{tr.n_way}w{tr.n_shot}s_{tr.val_episodes}.json",
        tr.val_episodes,
        tr.n_way,
        tr.n_shot,
        cfg.eval.n_query,
        cfg.eval.seed + 1,
    )
    data_domain = InputDomain.of_dataset(val_ds)
    meta_domain = data_domain if tr.meta_image_size is None else data_domain.resized(tr.meta_image_size)
    ctx = RecipeContext(
        pool=pool,
        train=tr,
        input_shape=meta_domain.shape,
        val_tasks=lambda: (convert_task(t, data_domain, meta_domain) for t in val_eps.tasks(val_ds)),
        run=run,
        device=cfg.device,
        progress=progress,
        datafree=cfg.datafree,
        input_mean=meta_domain.mean,
        input_std=meta_domain.std,
        dataset_domain=data_domain,
    )
    ctx.info["meta_model"] = dict(zip(("arch", "arch_kwargs"), ctx.meta_architecture()))
    ctx.info["meta_inputs"] = meta_domain.to_dict()
    ctx.info["pool"] = {"architectures": sorted({describe_architecture(e.arch, e.arch_kwargs) for e in pool.entries}),
                        "datasets": pool.datasets(), "n_models": len(pool)}
    model = recipe(ctx)
    atomic_torch_save(model.state_dict(), run.path / "model.pt")
    train_seconds = time.perf_counter() - start

    test_ds = get_dataset(cfg.dataset, cfg.data_root, "test")
    scores: dict[str, Any] = {}
    for shot in cfg.eval.shots:
        eps = episode_list(
            test_ds,
            episodes_dir / f"test_{cfg.eval.n_way}w{shot}s_{cfg.eval.episodes}.json",
            cfg.eval.episodes,
            cfg.eval.n_way,
            shot,
            cfg.eval.n_query,
            cfg.eval.seed,
        )
        bar = None
        if progress is not None:
            bar = lambda done, acc, s=shot, n=len(eps): progress(f"test {s}-shot", done, n, {"acc": acc})  # noqa: E731
        tasks = (convert_task(t, data_domain, meta_domain) for t in eps.tasks(test_ds))
        res: EvalResult = evaluate(model, tasks, steps=cfg.eval.steps, lr=cfg.eval.lr,
                                   device=torch.device(cfg.device), progress=bar)
        scores[f"{cfg.eval.n_way}way_{shot}shot"] = res.as_dict()
    results = {
        "recipe": cfg.recipe,
        "pool": str(cfg.pool),
        "dataset": cfg.dataset,
        "dfml_version": __version__,
        "scores": scores,
        "info": _jsonable(ctx.info),
        "seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "config": dataclasses.asdict(cfg),
    }
    run.write_results(results)
    return results


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
