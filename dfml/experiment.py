"""One experiment: a recipe on a pool, selected on meta-validation, scored once on fixed test episodes.

``run_experiment`` is what ``dfml train`` and ``dfml eval`` call, and what the demo and benchmark
scripts call for each recipe. It writes a run directory (see :mod:`dfml.runs`) and returns the
results. Meta-test episodes are drawn once from ``eval.seed`` and saved (indices only) so that
every recipe is scored on exactly the same tasks; the test split is touched only at the end.
Under ``torchrun`` every rank runs it: rank 0 writes the run directory's files, the recipe shares
out its work, and meta-test episodes are shared out and gathered (the same scores as one process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__
from . import distributed as dist
from .config import to_dict
from .data import DATASETS, InputDomain, convert_task
from .data.registry import check_options
from .eval.config import EvalConfig as EvalConfig
from .eval.protocols import EARLIER_PROTOCOL
from .datafree.trainer import TrainConfig
from .pool import ModelPool
from .config import apply_mapping
from .recipes import RECIPES, DataFreeConfig, RecipeContext, preset
from .recipes.base import describe_architecture, recipe_spec
from .locks import hold_directory
from .pool.manifest import MANIFEST_NAME
from .runs import RunDir, atomic_torch_save, sha256_file
from .scoring import episode_list as episode_list
from .scoring import load_split as load_split
from .scoring import meta_test as meta_test
from .scoring import meta_test_files as meta_test_files
from .scoring import meta_input_domain
from .tensorboard import LogConfig, TensorBoardMirror, require_tensorboard
from .upgrade import upgrade_config

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class ExperimentConfig:
    """A full experiment.

    Attributes:
        recipe: a name from ``dfml.recipes.RECIPES`` (``dfml train --help`` lists them).
        pool: the pool directory.
        dataset: the target domain for meta-validation/test (a name of ``dfml.data.DATASETS``: ``cifar_fs``,
            ``mini_imagenet``, ``omniglot``, ``cub``, ``image_folder``, ``toy``).
        data_root: where the dataset lives (not needed for ``toy``).
        data_options: the dataset's options (``dfml.data.dataset_options``), e.g. ``{image_size: 32}``;
            ``--image-size`` / ``--data-opt KEY=VALUE`` on the command line.
        device: ``cpu`` or ``cuda[:k]``.
        log: where metrics go besides ``metrics.jsonl`` (:class:`~dfml.tensorboard.LogConfig`, e.g.
            ``--set log.tensorboard=true``); read by every recipe, never part of what a run computes.
    """

    recipe: str = "maml"
    pool: str = ""
    dataset: str = "toy"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    datafree: DataFreeConfig = field(default_factory=DataFreeConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe {self.recipe!r} is not a recipe; valid: {', '.join(RECIPES.names())}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset {self.dataset!r} is not a dataset; valid: {', '.join(DATASETS.names())}")
        check_options(self.dataset, self.data_options)
        if not re.fullmatch(r"(cpu|cuda|mps)(:\d+)?", str(self.device)):
            raise ValueError(f"device {self.device!r} is not a device; write cpu, cuda or cuda:K (K: the GPU's index)")
        if self.train.n_way != self.eval.n_way:
            raise ValueError(
                f"train.n_way={self.train.n_way} but eval.n_way={self.eval.n_way}: the meta-model's head has train.n_way "
                f"outputs and is fine-tuned as it is on eval.n_way-way episodes; set both, e.g. "
                f"--set train.n_way={self.train.n_way} --set eval.n_way={self.train.n_way}"
            )


def experiment_config(recipe: str, *layers: dict[str, Any]) -> ExperimentConfig:
    """The configuration of ``recipe``: defaults, then the recipe's preset, then each mapping in ``layers``.

    Example:
        >>> cfg = experiment_config("robust", {"pool": "pools/p", "train": {"steps": 100}})
    """
    cfg = ExperimentConfig(recipe=recipe)
    for layer in (preset(recipe), *layers):  # fields that moved (dfml.upgrade): in their place in what they apply over
        cfg = apply_mapping(cfg, upgrade_config(layer, recipe, under=to_dict(cfg)))
    return cfg


def saved_defaults() -> dict[str, Any]:
    """What a saved configuration that lacks a field ran with: the defaults, except ``eval.protocol``.

    A field added to dfml after a run was saved had its default's behaviour in that run, with one
    exception: runs saved before ``eval.protocol`` existed were scored under
    :data:`~dfml.eval.protocols.EARLIER_PROTOCOL`, not today's default. Resuming such a run, or
    comparing it with a run of the standard protocol, is therefore refused.
    """
    out = to_dict(ExperimentConfig())
    out["eval"]["protocol"] = EARLIER_PROTOCOL
    return out


def run_experiment(cfg: ExperimentConfig, out: str | Path, progress: Progress | None = None,
                   extend: bool = False) -> dict[str, Any]:
    """Run (or resume) ``cfg`` in the run directory ``out`` and return its results.

    A run that already finished returns its saved ``results.json`` without redoing anything. The
    run directory is written only once the pool and the meta-validation data load, and only by
    the process holding its lock (see :mod:`dfml.locks`: a second command on the same ``out`` is
    refused). A resume, or the reuse of saved results, on another pool or other data than the run
    was made on (``inputs`` in ``run.json``) is refused. ``extend``: a run in ``out`` whose
    configuration differs only by a smaller ``train.budget_minutes`` or ``train.steps`` goes on from
    its last checkpoint, its earlier results kept in ``out/extended/<n>/`` (see
    :class:`~dfml.runs.RunDir`); without it such a run is refused, naming ``--extend``.
    """
    recipe = RECIPES.get(cfg.recipe)
    if not cfg.pool:
        raise ValueError("no pool given: pass --pool DIR (build one with `dfml pool build`)")
    pool = ModelPool(cfg.pool)
    check_experiment(cfg, pool)  # before any data loads
    val_ds = load_split(cfg, "val")
    finished = (Path(out) / "results.json").is_file()  # its saved results are returned: the test split is not read
    test_ds = None if finished and not extend else load_split(cfg, "test")
    check_experiment(cfg, pool, val_ds, test_ds)
    with hold_directory(out, "run directory", "use another --out"):
        return _run_locked(cfg, out, progress, recipe, pool, val_ds, test_ds, extend)


def check_experiment(cfg: ExperimentConfig, pool: ModelPool, val_ds: Any = None, test_ds: Any = None) -> None:
    """Refuse, before any work starts, what the configuration, the pool and the data tell will fail later.

    The configuration's own values are checked when it resolves (each config's ``__post_init__``);
    this checks them against the recipe's needs of the pool (:meth:`RecipeSpec.check_pool`), and
    the machine and data (:func:`check_machine_and_data`).

    Raises:
        ValueError: names the settings, what the pool or data holds, and the fix.
        ImportError: ``log.tensorboard`` is on and tensorboard is not installed (names the pip command).
    """
    recipe_spec(cfg.recipe).check_pool(cfg, pool)
    if cfg.log.tensorboard:
        require_tensorboard()
    check_machine_and_data(cfg, val_ds, test_ds)


def check_machine_and_data(cfg: ExperimentConfig, val_ds: Any = None, test_ds: Any = None) -> None:
    """Refuse a CUDA device torch cannot see and, when given, meta-validation and meta-test splits
    with too few classes or examples per class for ``cfg``'s episodes.

    Raises:
        ValueError: names the settings, what the data holds, and the fix.
    """
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} but torch sees no CUDA GPU here; use --device cpu")
    ev, tr = cfg.eval, cfg.train
    splits = (("val", val_ds, tr.n_way, tr.n_shot, f"meta-validation episodes of train.n_shot={tr.n_shot}", "train.n_way"),
              ("test", test_ds, ev.n_way, max(ev.shots), f"{max(ev.shots)}-shot episodes (eval.shots)", "eval.n_way"))
    for split, ds, n_way, shot, episodes, way in splits:
        if ds is None:
            continue
        if n_way > ds.num_classes:
            raise ValueError(f"the {cfg.dataset} {split} split has {ds.num_classes} classes, fewer than {way}={n_way}; "
                             f"lower train.n_way and eval.n_way to at most {ds.num_classes}")
        smallest = min(len(idx) for idx in ds.indices_by_class())
        if shot + ev.n_query > smallest:
            raise ValueError(
                f"the {cfg.dataset} {split} split's smallest class holds {smallest} examples, but {episodes} with "
                f"eval.n_query={ev.n_query} need {shot + ev.n_query} per class; keep shots + eval.n_query <= {smallest}"
            )


def run_inputs(pool: ModelPool, dataset: str, val_ds: Any) -> dict[str, dict[str, str]]:
    """What identifies a run's inputs (recorded in ``run.json``, see :meth:`RunDir.check_inputs`): the
    SHA-256 of the pool's manifest, and the dataset's name and meta-validation split's fingerprint."""
    fingerprint = json.dumps(val_ds.fingerprint(), sort_keys=True).encode()
    return {"pool": {"manifest_sha256": sha256_file(pool.root / MANIFEST_NAME)},
            "data": {"dataset": dataset, "val_sha256": hashlib.sha256(fingerprint).hexdigest()}}


def _run_locked(cfg: ExperimentConfig, out: str | Path, progress: Progress | None, recipe: Any, pool: ModelPool,
                val_ds: Any, test_ds: Any, extend: bool = False) -> dict[str, Any]:
    with dist.main_first():  # rank 0 creates the run directory; the others open it
        run = RunDir(out, to_dict(cfg), defaults=saved_defaults(), extend=extend, upgrade=upgrade_config)
        run.check_inputs(run_inputs(pool, cfg.dataset, val_ds), record=dist.is_main())
    if cfg.log.tensorboard and dist.is_main():
        run.mirror_metrics(TensorBoardMirror(run.path / "tb"))
    done = run.path / "results.json"
    if done.exists():
        log.info("%s already finished; returning its results", run.path)
        run.close_mirrors()  # a finished run's tb/ is written from its metrics.jsonl
        return json.loads(done.read_text())
    start = time.perf_counter()
    tr = cfg.train
    episodes_dir = Path(cfg.eval.episodes_dir) if cfg.eval.episodes_dir else run.path / "episodes"
    test_files = meta_test_files(cfg, episodes_dir)
    if dist.is_main():  # a copy of this run may find them in another folder (see RunDir)
        run.record_episodes([f for f in test_files.values() if f.is_file()])
    with dist.main_first():
        val_eps = episode_list(
            val_ds,
            run.path / "episodes" / f"val_{tr.n_way}w{tr.n_shot}s_{tr.val_episodes}.json",
            tr.val_episodes,
            tr.n_way,
            tr.n_shot,
            cfg.eval.n_query,
            cfg.eval.seed + 1,
        )
    device = dist.device_for(cfg.device)
    data_domain = InputDomain.of_dataset(val_ds)
    meta_domain = meta_input_domain(data_domain, tr)
    val_steps, val_lr = cfg.eval.validation()
    ctx = RecipeContext(
        pool=pool,
        train=tr,
        input_shape=meta_domain.shape,
        val_tasks=lambda: (convert_task(t, data_domain, meta_domain) for t in val_eps.tasks(val_ds)),
        val_steps=val_steps,
        val_lr=val_lr,
        run=run,
        device=device,
        progress=progress,
        datafree=cfg.datafree,
        input_mean=meta_domain.mean,
        input_std=meta_domain.std,
        dataset_domain=data_domain,
        protocol=cfg.eval.protocol,
        train_data=(lambda: load_split(cfg, "train")) if recipe_spec(cfg.recipe).uses_data
        else None,
    )
    ctx.info["meta_model"] = dict(zip(("arch", "arch_kwargs"), ctx.meta_architecture()))
    ctx.info["meta_inputs"] = meta_domain.to_dict()
    if dist.is_main():  # what rebuilds the meta-model from model.pt (dfml.export), before model.pt exists
        run.update_info(meta_model={**ctx.info["meta_model"], "inputs": meta_domain.to_dict(),
                                    "dataset_inputs": data_domain.to_dict()})
    ctx.info["pool"] = {"architectures": sorted({describe_architecture(e.arch, e.arch_kwargs) for e in pool.entries}),
                        "datasets": pool.datasets(), "n_models": len(pool)}
    model = recipe(ctx)
    if dist.is_main():
        atomic_torch_save(model.state_dict(), run.path / "model.pt")
    train_seconds = time.perf_counter() - start

    scores = meta_test(model, cfg, episodes_dir, progress, test_ds=test_ds)
    if dist.is_main():
        run.record_episodes(list(test_files.values()))
    results = {
        "recipe": cfg.recipe,
        "pool": str(cfg.pool),
        "dataset": cfg.dataset,
        "dfml_version": __version__,
        "scores": scores,
        "episodes_sha256": {key: sha256_file(f) for key, f in test_files.items()},
        "info": _jsonable(ctx.info),
        "seconds": {"train": train_seconds, "total": time.perf_counter() - start},
        "config": dataclasses.asdict(cfg),
    }
    if run.info.get("extensions"):
        results["extensions"] = run.info["extensions"]
    if dist.is_main():
        run.write_results(results)
        run.close_mirrors()
    dist.barrier()  # nobody returns (and may start the next run) before results.json is written
    return results


def load_meta_model(run_dir: str | Path, pool: str | Path | None = None) -> torch.nn.Module:
    """The meta-model a run selected (``model.pt``), rebuilt with the architecture the run recorded.

    The architecture is the meta-model's own (``train.meta_arch`` or the pool's single one, as
    :meth:`~dfml.recipes.RecipeContext.meta_architecture` chose it when the run started), read from
    ``run.json`` or ``results.json`` (see :func:`dfml.export.run_meta_model`); the pool is read only
    for runs made before dfml recorded it. To take the model elsewhere, export it
    (:func:`dfml.export.export_meta_model`, ``dfml export``).

    Args:
        run_dir: a run directory written by :func:`run_experiment` (only read).
        pool: the pool directory, for an old run, when its recorded ``pool`` path does not resolve
            from here (it is recorded as given, often relative to where the run was started).

    Returns:
        The network with a ``train.n_way`` head, batch-statistics BatchNorm, in eval mode.

    Raises:
        FileNotFoundError: no run directory or no ``model.pt`` in ``run_dir`` (the run has not
            finished training), or the pool of an old run is not found.
        ValueError: the weights do not fit the recorded architecture.
    """
    from .export import load_run_model

    return load_run_model(run_dir, pool)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
