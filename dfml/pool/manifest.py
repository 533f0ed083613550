"""The pool manifest ``pool.json``: one record per pre-trained model, written atomically.

Example entry::

    {"index": 0, "file": "models/model_0000.pt", "arch": "conv4",
     "arch_kwargs": {"in_channels": 3, "num_classes": 5, "hidden": 32, "image_size": 32},
     "n_way": 5, "classes": ["apple", ...], "class_ids": [0, ...], "dataset": "cifar_fs",
     "split": "train", "seed": 1234, "heldout_acc": 0.91, "best_epoch": 17,
     "sha256": "9f...", "dfml_version": "0.1.0", "trust": "trusted", "trust_detail": {},
     "input_shape": [3, 32, 32], "input_mean": [0.507, 0.487, 0.441], "input_std": [0.267, 0.256, 0.276]}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..data.domain import InputDomain
from ..files import write_atomic as write_atomic  # pool modules import it from here

MANIFEST_NAME = "pool.json"
BUILD_DIR = ".build"  # per-model records of an unfinished `dfml pool build` (removed when pool.json is complete)
BUILD_RECORD = "build.json"  # in BUILD_DIR: the build's config, written when it starts
FORMAT_VERSION = 1
TRUST_LEVELS = ("trusted", "deceptive", "poor")


@dataclass
class PoolEntry:
    """One pre-trained model of a pool.

    Attributes:
        index: position in the pool (``0..len-1``).
        file: weights file, relative to the pool directory (a ``torch.save``'d state dict).
        arch, arch_kwargs: rebuild with ``build_model(arch, **arch_kwargs)``.
        n_way: number of classes the model predicts; output ``j`` is ``classes[j]``.
        classes: the class names behind outputs ``0..n_way-1``, as advertised.
        class_ids: the same classes as indices into the source split's class list.
        dataset, split: where the classes come from (e.g. ``"cifar_fs"``, ``"train"``).
        seed: the per-model seed it was trained with (``None`` for imported models).
        heldout_acc: accuracy on the held-out part of its classes at ``best_epoch`` (``None`` if unknown).
        best_epoch: 1-based epoch whose weights were kept (``0``: untrained, ``None``: unknown).
        sha256: SHA-256 of the weights file, checked on every load.
        dfml_version: the dfml version that wrote the entry.
        trust: ``"trusted"``, ``"deceptive"`` (trained on other classes or data than advertised) or
            ``"poor"`` (untrained or barely trained). **Ground truth for evaluating robustness:
            learners, selectors and inverters must never read it** (nor ``trust_detail``); the
            advertised fields (``classes``, ``heldout_acc``...) are all they may use.
        trust_detail: what an untrustworthy model really is (e.g. the classes it was trained on).
        input_shape, input_mean, input_std: the inputs the model was trained on: one input's shape
            and the per-channel normalisation of its dataset (``None``: not recorded, as in pools
            built before dfml recorded it; such a model is assumed to take the meta-model's inputs).
            Pools mixing datasets need them to invert every model at its own resolution.
    """

    index: int
    file: str
    arch: str
    arch_kwargs: dict[str, Any]
    n_way: int
    classes: list[str]
    class_ids: list[int]
    dataset: str
    split: str
    seed: int | None
    heldout_acc: float | None
    best_epoch: int | None
    sha256: str
    dfml_version: str
    trust: str = "trusted"
    trust_detail: dict[str, Any] = field(default_factory=dict)
    input_shape: list[int] | None = None
    input_mean: list[float] | None = None
    input_std: list[float] | None = None

    def __post_init__(self) -> None:
        if self.trust not in TRUST_LEVELS:
            raise ValueError(f"pool entry {self.index}: trust must be one of {TRUST_LEVELS}, got {self.trust!r}")
        if len(self.classes) != self.n_way or len(self.class_ids) != self.n_way:
            raise ValueError(
                f"pool entry {self.index}: n_way={self.n_way} but {len(self.classes)} class names and "
                f"{len(self.class_ids)} class ids"
            )
        if self.input_shape is None and (self.input_mean is not None or self.input_std is not None):
            raise ValueError(f"pool entry {self.index}: input_mean/input_std are recorded without input_shape")
        self.input_domain()  # checks shape and normalisation

    def input_domain(self) -> InputDomain | None:
        """The recorded :class:`~dfml.data.InputDomain` of the model's inputs, or ``None`` if unrecorded."""
        if self.input_shape is None:
            return None
        try:
            return InputDomain(tuple(self.input_shape), self.input_mean, self.input_std)
        except ValueError as err:
            raise ValueError(f"pool entry {self.index}: bad input_shape/input_mean/input_std: {err}") from err

    @property
    def architecture_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """``(arch, sorted arguments)``, hashable: equal keys build models of identical shapes."""
        return self.arch, tuple(sorted((k, repr(v)) for k, v in self.arch_kwargs.items()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolEntry:
        """Parse one manifest record; a missing or unknown field raises ``ValueError`` naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
        missing = [n for n in required if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ValueError(
                f"pool entry {data.get('index', '?')}: missing field(s) {missing}, unknown field(s) {unknown}; "
                f"expected fields {names}"
            )
        for name, value in data.items():
            ok, expected = _FIELD_CHECKS[name]
            if not ok(value):
                where = data["index"] if _is_int(data["index"]) else "?"
                raise ValueError(f"entry {where}: field {name!r} must be {expected}, got {value!r}; "
                                 "rebuild or re-copy the pool")
        return cls(**data)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _inside_pool(v: Any) -> bool:
    """A relative path that stays inside the pool directory (no ``..``, not absolute)."""
    path = PurePosixPath(v) if isinstance(v, str) else None
    return path is not None and v != "" and not path.is_absolute() and ".." not in path.parts and "\\" not in v


_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "index": (_is_int, "an integer"),
    "file": (_inside_pool, "a path inside the pool directory (e.g. 'models/model_0000.pt')"),
    "arch": (lambda v: isinstance(v, str), "an architecture name"),
    "arch_kwargs": (lambda v: isinstance(v, dict), "a mapping of architecture arguments"),
    "n_way": (_is_int, "an integer"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
    "class_ids": (lambda v: isinstance(v, list) and all(map(_is_int, v)), "a list of integers"),
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "split": (lambda v: isinstance(v, str), "a string"),
    "seed": (lambda v: v is None or _is_int(v), "an integer or null"),
    "heldout_acc": (lambda v: v is None or (_is_number(v) and 0.0 <= v <= 1.0), "a number in [0, 1] or null"),
    "best_epoch": (lambda v: v is None or _is_int(v), "an integer or null"),
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]+", v) is not None, "hexadecimal digits"),
    "dfml_version": (lambda v: isinstance(v, str), "a string"),
    "trust": (lambda v: isinstance(v, str), "a string"),
    "trust_detail": (lambda v: isinstance(v, dict), "a mapping"),
    "input_shape": (lambda v: v is None or (isinstance(v, list) and all(map(_is_int, v))), "a list of integers or null"),
    "input_mean": (lambda v: v is None or (isinstance(v, list) and all(map(_is_number, v))), "a list of numbers or null"),
    "input_std": (lambda v: v is None or (isinstance(v, list) and all(map(_is_number, v))), "a list of numbers or null"),
}


@dataclass
class PoolManifest:
    """The whole of ``pool.json``.

    Attributes:
        entries: the models, ``entries[i].index == i``.
        build: how the pool was made (the pretraining config and data fingerprint, or the import
            source); re-running a build compares against it.
        format_version: manifest format (currently 1).
    """

    entries: list[PoolEntry] = field(default_factory=list)
    build: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "build": self.build,
            "entries": [e.to_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "pool.json") -> PoolManifest:
        if not isinstance(data, dict) or "entries" not in data:
            raise ValueError(f"{source} is not a dfml pool manifest (no 'entries' list)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{source} has format_version {version!r}; this dfml reads version {FORMAT_VERSION}. "
                f"Rebuild the pool with this version of dfml."
            )
        records, build = data["entries"], data.get("build") or {}
        if not isinstance(records, list):
            raise ValueError(f"{source}: 'entries' must be a list of model records, got a {type(records).__name__}; "
                             "rebuild or re-copy the pool")
        if not isinstance(build, dict):
            raise ValueError(f"{source}: 'build' must be a mapping, got a {type(build).__name__}; rebuild or re-copy "
                             "the pool")
        entries = []
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise ValueError(f"{source}: entry at position {i} is a {type(record).__name__}, not a model record; "
                                 "rebuild or re-copy the pool")
            try:
                entries.append(PoolEntry.from_dict(record))
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
        for i, e in enumerate(entries):
            if e.index != i:
                raise ValueError(f"{source}: entry at position {i} has index {e.index}; indices must be 0..n-1")
        return cls(entries=entries, build=dict(build), format_version=version)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/pool.json`` atomically (temp file, fsync, ``os.replace``)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"
        return write_atomic(Path(directory) / MANIFEST_NAME, text.encode())

    @classmethod
    def load(cls, directory: str | Path) -> PoolManifest:
        path = Path(directory) / MANIFEST_NAME
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); it may be truncated. Rebuild the pool.") from err
        return cls.from_dict(data, source=str(path))


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def unfinished_build(directory: str | Path, manifest: PoolManifest | None) -> tuple[int, int] | None:
    """``(models built, models asked for)`` of a ``dfml pool build`` stopped in ``directory``, else ``None``.

    Built models are those in ``manifest`` (the finished prefix a single process writes) or with a
    record in ``.build/`` (what every rank of a torchrun build writes); their files are not checked.
    """
    directory = Path(directory)
    record, asked = directory / BUILD_DIR / BUILD_RECORD, None
    if record.is_file():
        try:
            asked = json.loads(record.read_bytes())["config"]["n_models"]
        except (ValueError, KeyError, TypeError):
            asked = None
    if asked is None and manifest is not None and manifest.build.get("kind") == "pretrain":
        asked = (manifest.build.get("config") or {}).get("n_models")
    if not isinstance(asked, int) or isinstance(asked, bool):
        return None
    built = {e.index for e in manifest.entries} if manifest is not None else set()
    for path in (directory / BUILD_DIR).glob("model_*.json"):
        index = path.stem.removeprefix("model_")
        if index.isdigit():
            built.add(int(index))
    built = {i for i in built if 0 <= i < asked}
    return (len(built), asked) if len(built) < asked else None


def unfinished_message(directory: str | Path, progress: tuple[int, int]) -> str:
    """The line that says a pool is unfinished and how to finish it."""
    return (f"pool {str(directory)!r} is unfinished: {progress[0]} of {progress[1]} models built; run the same "
            "`dfml pool build` command again to finish it")
