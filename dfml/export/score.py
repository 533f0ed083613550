"""Scoring an exported meta-model on fixed meta-test episodes, like a recipe's run (``dfml eval --model``)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import __version__
from .. import distributed as dist
from ..config import config_changes, lookup, to_dict
from ..data import InputDomain
from ..eval.config import META_TEST_FIELDS, meta_test_protocol
from ..locks import hold_directory
from ..runs import RunDir, sha256_file
from .file import build_exported, read_export

log = logging.getLogger(__name__)

READS = ("dataset", "data_root", "data_options", "device", *(f"eval.{name}" for name in META_TEST_FIELDS),
         "train.n_way")
"""What :func:`score_exported` reads of an :class:`~dfml.experiment.ExperimentConfig`: the meta-test protocol
(not meta-validation's ``eval.val_*``), ``train.n_way`` only as the twin of ``eval.n_way``, which the
configuration keeps equal to it."""


def score_exported(path: str | Path, cfg: Any, out: str | Path, progress: Any = None) -> dict[str, Any]:
    """Score an exported meta-model on ``cfg``'s fixed meta-test episodes, like a recipe's run (``dfml eval --model``).

    ``cfg`` (an :class:`~dfml.experiment.ExperimentConfig`) gives the dataset, the device and the
    ``eval`` protocol; nothing else of it is read. ``out`` becomes a run directory whose
    ``results.json`` ``dfml compare`` pairs with recipes' runs scored on the same episodes. A finished
    ``out`` returns its saved results; another model file there is refused (its SHA-256 is in
    ``config.yaml``).

    The model must take the dataset's inputs (shape and normalisation), or those the run that made
    it resized to its own (``train.meta_image_size``, recorded in the export's ``dataset.inputs``).

    Raises:
        ValueError: ``path`` is not an export, its head does not have ``eval.n_way`` outputs, or its
            inputs do not fit the dataset (names both and the fix).
    """
    from ..experiment import check_machine_and_data, load_split, meta_test, meta_test_files

    export = read_export(path)
    n_way = export["arch_kwargs"].get("num_classes")
    if n_way != cfg.eval.n_way:
        raise ValueError(f"{str(path)!r} holds a meta-model with {n_way} outputs, but eval.n_way={cfg.eval.n_way}; "
                         f"score it on {n_way}-way episodes: --set train.n_way={n_way} --set eval.n_way={n_way}")
    test_ds = load_split(cfg, "test")
    check_machine_and_data(cfg, None, test_ds)
    size = _fitting_size(str(path), export, cfg.dataset, InputDomain.of_dataset(test_ds))
    cfg = replace(cfg, train=replace(cfg.train, meta_image_size=size))
    protocol = meta_test_protocol(to_dict(cfg.eval))
    _warn_of_other_settings(str(path), export["eval"], protocol)
    config = {"model": {"file": str(path), "sha256": sha256_file(Path(path))}, "dataset": cfg.dataset,
              "data_root": cfg.data_root, "data_options": cfg.data_options, "device": cfg.device,
              "eval": protocol}
    fingerprint = json.dumps(test_ds.fingerprint(), sort_keys=True).encode()
    with hold_directory(out, "run directory", "use another --out"):
        with dist.main_first():
            run = RunDir(out, config)
            run.check_inputs({"data": {"dataset": cfg.dataset, "test_sha256": hashlib.sha256(fingerprint).hexdigest()}},
                             record=dist.is_main())
        if (run.path / "results.json").exists():
            return json.loads((run.path / "results.json").read_text())
        start = time.perf_counter()
        episodes_dir = Path(cfg.eval.episodes_dir) if cfg.eval.episodes_dir else run.path / "episodes"
        model = build_exported(export["arch"], export["arch_kwargs"], export["state_dict"], str(path))
        scores = meta_test(model, cfg, episodes_dir, progress, test_ds=test_ds)
        files = meta_test_files(cfg, episodes_dir)
        results = {"model": str(path), "dataset": cfg.dataset, "dfml_version": __version__, "scores": scores,
                   "episodes_sha256": {key: sha256_file(f) for key, f in files.items()},
                   "info": {"export": {k: v for k, v in export.items() if k != "state_dict"}},
                   "seconds": {"total": time.perf_counter() - start}, "config": config}
        if dist.is_main():
            run.record_episodes(list(files.values()))
            run.write_results(results)
        dist.barrier()
        return results


def _fitting_size(path: str, export: dict[str, Any], dataset: str, data: Any) -> int | None:
    """The ``train.meta_image_size`` that carries ``data`` (the dataset's inputs) to the model's: ``None``
    when they are the same; the model's side when the run that made it resized these very inputs."""
    model = InputDomain(**export["inputs"])
    if _same_domain(model, data):
        return None
    recorded = (export.get("dataset") or {}).get("inputs")
    if recorded is not None and model.is_image and data.is_image and _same_domain(InputDomain(**recorded), data) \
            and _same_domain(data.resized(model.shape[-1]), model):
        return model.shape[-1]
    made_for = (export.get("dataset") or {}).get("name")
    raise ValueError(f"{path!r} takes inputs {_describe(model)}, but the {dataset} test split holds {_describe(data)}; "
                     f"score it on the data it was made for{f' ({made_for})' if made_for else ''}")


def _same_domain(a: Any, b: Any) -> bool:
    def close(x: Any, y: Any) -> bool:
        return (x is None) == (y is None) and (x is None or all(abs(p - q) < 1e-6 for p, q in zip(x, y)))

    return tuple(a.shape) == tuple(b.shape) and close(a.mean, b.mean) and close(a.std, b.std)


def _describe(domain: Any) -> str:
    shape = "x".join(str(s) for s in domain.shape)
    if domain.mean is None:
        return f"{shape} (not normalised)"
    mean, std = ([round(v, 4) for v in vs] for vs in (domain.mean, domain.std))
    return f"{shape} normalised with mean {mean} and std {std}"


def _warn_of_other_settings(path: str, recorded: dict[str, Any], now: dict[str, Any]) -> None:
    """Log which meta-test settings differ from those the model's run was scored with."""
    differ = [k for k in config_changes(recorded, now) if k != "episodes_dir"]
    if differ:
        log.warning("%s is scored with other meta-test settings than its run was (eval: %s; the run's: %s); set them "
                    "with --set eval.KEY=VALUE to score it as the run did", path, ", ".join(differ),
                    ", ".join(f"{k}={lookup(recorded, k)}" for k in differ))
