"""A run's meta-model in one file that needs neither the run directory nor the pool.

``dfml export RUN --out model.pt`` (:func:`export_meta_model`) writes a dict of plain values, which
``torch.load(path, weights_only=True)`` reads without dfml's help:

==================  ==============================================================================
``format``          ``"dfml.meta_model"`` (``format_version``: 1)
``dfml_version``    the dfml that wrote the file
``arch``            the architecture's registry name (:data:`dfml.models.MODELS`)
``arch_kwargs``     its constructor arguments, ``num_classes`` and input sizes included
``state_dict``      the weights
``batch_stats``     ``True``: every BatchNorm layer normalises with the statistics of the batch it is
                    given (:func:`dfml.models.use_batch_stats`; the few-shot convention: the support
                    set while adapting, the query set while scoring), so there are no running statistics
``inputs``          one input: ``{"shape": [C, H, W] or [D], "mean": [...] | None, "std": [...] | None}``;
                    images are ``(pixels in [0, 1] - mean) / std``
``eval``            the run's meta-test protocol (its ``eval`` section: ``protocol``, ``n_way``, ``shots``,
                    ``n_query``, ``episodes``, ``steps``, ``lr``, ``seed``, ``calibration`` ...)
``scores``          the run's meta-test scores, ``{"<n>way_<k>shot": {"mean", "ci95", "n"}}`` (``None``:
                    the run was not scored yet)
``dataset``         ``{"name", "options", "inputs"}``: the data it was scored on (with the dataset's
                    options), and their inputs before any resizing to the model's (``None`` where
                    the run did not record them)
``run``             ``{"recipe", "path", "git_revision", "uses_data"}``
==================  ==============================================================================

Rebuild it with :func:`load_exported`, or in five lines::

    import torch
    from dfml.models import build_model, use_batch_stats

    export = torch.load("model.pt", weights_only=True)
    model = use_batch_stats(build_model(export["arch"], **export["arch_kwargs"]))
    model.load_state_dict(export["state_dict"])

``--torchscript FILE`` also writes the model compiled by ``torch.jit.script`` (``torch.jit.load``
needs no dfml at all), the same metadata in its extra file ``dfml.json``.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..config import load_yaml
from ..eval.config import meta_test_protocol
from ..files import load_tensors, read_state_dict, torch_bytes, write_atomic
from ..models.norm import use_batch_stats
from ..models.registry import build_model

FORMAT = "dfml.meta_model"
FORMAT_VERSION = 1
_FIELDS = {"arch": str, "arch_kwargs": dict, "state_dict": dict, "inputs": dict, "eval": dict}


def run_meta_model(run_dir: str | Path, pool: str | Path | None = None) -> dict[str, Any]:
    """What a run recorded of its meta-model: ``{"arch", "arch_kwargs", "inputs", "dataset_inputs"}``.

    The record is read from ``run.json`` (written when the run starts), else from ``results.json``'s
    ``info.meta_model``/``info.meta_inputs`` (runs started before ``run.json`` held it). A run older
    than both recorded neither, and had no ``train.meta_arch``: its meta-model has the pool's
    architecture (pool entry 0's, with a ``train.n_way`` head). ``inputs`` and ``dataset_inputs``
    are ``None`` where nothing recorded them.

    Args:
        run_dir: a run directory (only read).
        pool: the pool, for a run that recorded nothing, when its recorded path does not resolve.

    Raises:
        FileNotFoundError: ``run_dir`` is no run directory, or the pool of an old run is not found.
        ValueError: an old run with ``train.meta_arch`` that recorded no meta-model (finish it first).
    """
    run = _run_dir(run_dir)
    record = _json(run / "run.json").get("meta_model")
    if isinstance(record, dict) and "arch" in record:
        return {"inputs": None, "dataset_inputs": None, **record}
    info = _json(run / "results.json").get("info") or {}
    if isinstance(info.get("meta_model"), dict):
        cfg = load_yaml(run / "config.yaml", what="run configuration")
        same = (cfg.get("train") or {}).get("meta_image_size") is None  # the dataset's inputs are the model's
        inputs = info.get("meta_inputs")
        return {**info["meta_model"], "inputs": inputs, "dataset_inputs": inputs if same else None}
    return _pool_architecture(run, pool)


def _pool_architecture(run: Path, pool: str | Path | None) -> dict[str, Any]:
    from ..pool import ModelPool

    cfg = load_yaml(run / "config.yaml", what="run configuration")
    train = cfg.get("train") or {}
    if train.get("meta_arch"):
        raise ValueError(f"{str(run)!r} records no meta-model architecture (it was started by an older dfml) and sets "
                         f"train.meta_arch: run its command again to finish it (its results.json then records it)")
    where = Path(pool) if pool is not None else Path(str(cfg.get("pool") or ""))
    if not (where / "pool.json").is_file():
        raise FileNotFoundError(
            f"the run's pool {str(where)!r} has no pool.json; pass pool= (--pool) with the pool the run used"
        )
    entry = ModelPool(where).entry(0)
    domain = entry.input_domain()
    inputs = None if domain is None else domain.to_dict()
    return {"arch": entry.arch, "arch_kwargs": {**entry.arch_kwargs, "num_classes": int(train.get("n_way", 5))},
            "inputs": inputs, "dataset_inputs": None}


def load_run_model(run_dir: str | Path, pool: str | Path | None = None) -> nn.Module:
    """The selected meta-model of a run (``model.pt``), rebuilt as :func:`run_meta_model` records it.

    Returns:
        The network in eval mode, BatchNorm on batch statistics.

    Raises:
        FileNotFoundError: no run directory at ``run_dir``, or no ``model.pt`` in it yet (the run has
            not finished training).
        ValueError: its weights do not fit the recorded architecture.
    """
    run = _run_dir(run_dir)
    weights = _weights(run)
    record = run_meta_model(run, pool)
    state = read_state_dict(weights, fix="re-run the run's command to write it again")
    return build_exported(record["arch"], record["arch_kwargs"], state, str(weights))


def export_meta_model(run_dir: str | Path, out: str | Path, *, torchscript: str | Path | None = None,
                      force: bool = False, pool: str | Path | None = None) -> dict[str, Any]:
    """Write ``run_dir``'s meta-model to ``out`` (see the module docstring), and as TorchScript to ``torchscript``.

    Nothing is written over an existing file unless ``force``; each file is written whole or not at
    all (:func:`dfml.files.write_atomic`). Every check runs before the first file is written.

    Returns:
        The exported dict (what ``torch.load(out, weights_only=True)`` returns).

    Raises:
        FileNotFoundError: no run directory at ``run_dir``, or the run has no selected meta-model yet.
        FileExistsError: ``out`` or ``torchscript`` exists and ``force`` is not set.
        ValueError: the run recorded no inputs, or ``out`` and ``torchscript`` are the same file.
    """
    run = _run_dir(run_dir)
    targets = [Path(out)] + ([Path(torchscript)] if torchscript is not None else [])
    if len(targets) == 2 and targets[0].resolve() == targets[1].resolve():
        raise ValueError(f"--out and --torchscript name the same file {str(targets[0])!r}; give two file names")
    for target in targets:
        if target.is_dir():
            raise IsADirectoryError(f"{str(target)!r} is a folder; give a file name, e.g. {str(target / 'model.pt')!r}")
        if target.exists() and not force:
            raise FileExistsError(f"{str(target)!r} already exists; nothing was written. Pass --force to replace it, "
                                  "or choose another file name")
    export = exported_dict(run, pool)
    model = build_exported(export["arch"], export["arch_kwargs"], export["state_dict"], str(run / "model.pt"))
    script = _torchscript_bytes(model, export) if torchscript is not None else None
    write_atomic(targets[0], torch_bytes(export))
    if script is not None:
        write_atomic(targets[1], script)
    return export


def exported_dict(run_dir: str | Path, pool: str | Path | None = None) -> dict[str, Any]:
    """The dict :func:`export_meta_model` writes (plain values and tensors only)."""
    from ..experiment import saved_defaults

    run = _run_dir(run_dir)
    weights = _weights(run)
    record = run_meta_model(run, pool)
    if record["inputs"] is None:
        raise ValueError(f"{str(run)!r} records no input shape for its meta-model (it was made by an older dfml); "
                         "score it again in a new --out with this dfml to record it, or use "
                         "dfml.experiment.load_meta_model")
    results = _json(run / "results.json")
    cfg = results.get("config") or load_yaml(run / "config.yaml", what="run configuration")
    info, scores = results.get("info") or {}, results.get("scores")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dfml_version": __version__,
        "arch": record["arch"],
        "arch_kwargs": _plain(record["arch_kwargs"]),
        "state_dict": read_state_dict(weights, fix="re-run the run's command to write it again"),
        "batch_stats": True,
        "inputs": _plain(record["inputs"]),
        # the meta-test protocol it was scored with
        "eval": meta_test_protocol(_merged(saved_defaults()["eval"], _plain(cfg.get("eval") or {}))),
        "scores": None if not scores else {k: {f: v[f] for f in ("mean", "ci95", "n") if f in v}
                                           for k, v in scores.items()},
        "dataset": {"name": cfg.get("dataset"), "options": _plain(cfg.get("data_options") or {}),
                    "inputs": _plain(record["dataset_inputs"])},
        "run": {"recipe": cfg.get("recipe"), "path": str(run),
                "git_revision": _json(run / "run.json").get("git_revision"),
                "uses_data": bool(info.get("uses_data", False))},
    }


def read_export(path: str | Path) -> dict[str, Any]:
    """Load and check a file written by :func:`export_meta_model` (``weights_only``: no code runs).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a plain tensor file, not a dfml export (e.g. a run's bare ``model.pt``), written
            by a newer dfml, or a field missing or of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist; write one with `dfml export RUN --out FILE`")
    data = load_tensors(path, fix="give a file written by `dfml export`")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        what = "a state dict" if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()) \
            else f"a {type(data).__name__}"
        raise ValueError(f"{str(path)!r} is not a dfml export ({what} without format {FORMAT!r}, e.g. a run's bare "
                         "model.pt); write one with `dfml export RUN --out FILE`")
    if not isinstance(data.get("format_version"), int) or data["format_version"] > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has format_version {data.get('format_version')!r}, which this dfml "
                         f"({__version__}) cannot read (it reads {FORMAT_VERSION}); upgrade dfml")
    for key, kind in _FIELDS.items():
        if not isinstance(data.get(key), kind):
            raise ValueError(f"{str(path)!r}: field {key!r} must be a {kind.__name__}, got "
                             f"{type(data.get(key)).__name__}; export the run again with `dfml export`")
    return data


def load_exported(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The meta-model of an exported file, in eval mode, BatchNorm on batch statistics.

    Example:
        >>> model = dfml.load_exported("model.pt")
        >>> logits = model(x)  # x: [B, *export["inputs"]["shape"]], normalised as export["inputs"] says
    """
    export = read_export(path)
    return build_exported(export["arch"], export["arch_kwargs"], export["state_dict"], str(path)).to(device)


def build_exported(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """``build_model(arch, **kwargs)`` on batch statistics, in eval mode, with ``state`` loaded.

    Raises:
        ValueError: ``state`` does not fit the architecture (names ``source``, the file it came from).
    """
    model = use_batch_stats(build_model(arch, **kwargs))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"{source}: the weights do not fit the recorded meta-model {arch}({kwargs}): "
                         f"{first}") from None
    return model.eval()


def _torchscript_bytes(model: nn.Module, export: dict[str, Any]) -> bytes:
    """``model`` compiled by ``torch.jit.script`` (traced on a zero batch if it does not script), as bytes."""
    meta = {k: v for k, v in export.items() if k != "state_dict"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.x marks TorchScript as deprecated
        try:
            compiled = torch.jit.script(model)
        except Exception:  # noqa: BLE001 - an architecture TorchScript cannot compile: trace it instead
            compiled = torch.jit.trace(model, torch.zeros(2, *export["inputs"]["shape"]))
        buf = io.BytesIO()
        torch.jit.save(compiled, buf, _extra_files={"dfml.json": json.dumps(meta)})
    return buf.getvalue()


def _run_dir(run_dir: str | Path) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory {str(run)!r} does not exist; give a directory written by `dfml train` "
                                "or `dfml eval` (e.g. runs/demo/maml)")
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{str(run)!r} is not a run directory (no config.yaml); give a directory written by "
                                "`dfml train` or `dfml eval` (e.g. runs/demo/maml)")
    return run


def _weights(run: Path) -> Path:
    weights = run / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{str(run)!r} has no selected meta-model yet (no model.pt): the run has not finished "
                         "training; run its command again to finish it (run.json records the command)")
    return weights


def _json(path: Path) -> dict[str, Any]:
    """``path``'s JSON object, ``{}`` when there is no such file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{str(path)!r} is not valid JSON (it may be truncated); run the run's command again "
                         "to write it") from None
    return data if isinstance(data, dict) else {}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (what ``weights_only`` loading and JSON both take)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merged(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with the fields it lacks taken from ``defaults`` (sections merged field by field)."""
    out = dict(defaults)
    for key, value in saved.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
