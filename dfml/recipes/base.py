"""The recipe registry and what a recipe is handed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


import torch
from torch import nn

from ..config import load_yaml
from ..data.domain import InputDomain
from ..eval.config import META_TEST_FIELDS, VALIDATION_FIELDS
from ..eval.protocols import DEFAULT_PROTOCOL, get_protocol
from ..datafree.config import DataFreeConfig
from ..datafree.trainer import TrainConfig
from ..models.registry import build_model, model_arguments
from ..pool import ModelPool
from ..registry import Registry
from ..runs import RunDir
from ..types import Task
from ..upgrade import moved_hint


@dataclass
class RecipeContext:
    """Everything a recipe may use.

    Attributes:
        pool: the model pool (the only source of knowledge: recipes never see real training data).
        train: meta-training hyper-parameters.
        input_shape: shape of one input of the target domain.
        val_tasks: factory of the fixed meta-validation episodes (model selection only).
        val_steps, val_lr: the fine-tuning of each meta-validation episode
            (:meth:`dfml.eval.EvalConfig.validation`: ``eval.val_steps``/``val_lr``, by default meta-test's).
        run: the run directory (checkpoints, metrics), or ``None``.
        device: where to train.
        progress: optional callback ``(stage, i, n, info)`` for the CLI's progress bars.
        info: filled in by the recipe (costs, best step...), copied into ``results.json``.
        datafree: the data-free loop's parts and the ``maml`` recipe's bank (default: ``DataFreeConfig()``,
            as in an :class:`~dfml.experiment.ExperimentConfig`).
        input_mean, input_std: per-channel normalisation of the target domain's images (what the
            teachers were trained on); generators that output ``[0, 1]`` images use it.
        dataset_domain: the meta-test dataset's own inputs (before ``train.meta_image_size``), for
            pool models that record none (``None``: the meta-model's).
        protocol: the named protocol (``eval.protocol``, :mod:`dfml.eval.protocols`): how a freshly
            built meta-model is initialised (:meth:`build_meta_model`) and the ``random`` baseline's head.
        train_data: loads the dataset's real meta-train split; given only to recipes whose spec says
            ``uses_data`` (references that are not data-free), ``None`` for every data-free recipe.

    ``input_shape``, ``input_mean`` and ``input_std`` describe the meta-model's inputs
    (:attr:`meta_domain`). Pool models may take other inputs (:meth:`domain_of`): recipes invert
    each at its own and convert the images (:func:`~dfml.data.convert_task`).
    """

    pool: ModelPool
    train: TrainConfig
    input_shape: tuple[int, ...]
    val_tasks: Callable[[], Iterable[Task]]
    run: RunDir | None = None
    device: torch.device | str = "cpu"
    progress: Callable[[str, int, int, dict[str, Any]], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    datafree: DataFreeConfig = field(default_factory=DataFreeConfig)
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    dataset_domain: InputDomain | None = None
    protocol: str = DEFAULT_PROTOCOL
    train_data: Callable[[], Any] | None = None
    val_steps: int = 10
    val_lr: float = 0.01

    @property
    def meta_domain(self) -> InputDomain:
        """The meta-model's inputs: ``input_shape`` normalised with ``input_mean``/``input_std``."""
        image = len(self.input_shape) == 3
        return InputDomain(self.input_shape, self.input_mean if image else None, self.input_std if image else None)

    def domain_of(self, i: int) -> InputDomain:
        """The inputs pool model ``i`` takes: its recorded domain, else ``dataset_domain`` (else the meta-model's)."""
        return self.pool.entry(i).input_domain() or self.dataset_domain or self.meta_domain

    def teacher_domains(self) -> list[InputDomain]:
        """:meth:`domain_of` every pool model, in pool order."""
        return [self.domain_of(i) for i in range(len(self.pool))]

    def meta_architecture(self) -> tuple[str, dict[str, Any]]:
        """The meta-model's architecture and arguments (``num_classes`` is ``train.n_way``).

        ``train.meta_arch`` (with ``train.meta_arch_kwargs``) when set, else the pool's single
        architecture (models that differ only in input sizes count as one, see
        :func:`describe_architecture`). Input-size arguments always follow the meta-model's inputs
        (``input_shape``).

        Raises:
            ValueError: a pool of several architectures and no ``train.meta_arch`` (names the option).
        """
        tr = self.train
        if tr.meta_arch is not None:
            arch, kwargs = tr.meta_arch, dict(tr.meta_arch_kwargs)
        else:
            archs = sorted({describe_architecture(e.arch, e.arch_kwargs) for e in self.pool.entries})
            if len(archs) != 1:
                raise ValueError(
                    f"the pool holds {len(archs)} architectures ({'; '.join(archs)}), so the meta-model's cannot be "
                    "taken from it: set train.meta_arch (e.g. --set train.meta_arch=conv4, arguments in "
                    "train.meta_arch_kwargs)"
                )
            e = self.pool.entry(0)
            arch, kwargs = e.arch, dict(e.arch_kwargs)
        accepted = model_arguments(arch)
        shape = self.input_shape
        sizes = {"in_channels": shape[0], "image_size": shape[-1]} if len(shape) == 3 else {"in_features": shape[0]}
        kwargs.update({k: v for k, v in sizes.items() if k in accepted})
        kwargs["num_classes"] = tr.n_way
        return arch, kwargs

    def build_meta_model(self, seed: int) -> nn.Module:
        """A fresh meta-model (:meth:`meta_architecture`), seeded, initialised as :attr:`protocol` says.

        An architecture that takes an ``init`` argument (``Conv4``) gets the protocol's
        ``meta_init`` unless ``train.meta_arch_kwargs`` sets ``init`` itself.
        """
        arch, kwargs = self.meta_architecture()
        explicit = self.train.meta_arch is not None and "init" in self.train.meta_arch_kwargs
        if "init" in model_arguments(arch) and not explicit:
            kwargs["init"] = get_protocol(self.protocol).meta_init
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch, **kwargs)


_SIZES = ("num_classes", "in_channels", "in_features", "image_size")


def describe_architecture(arch: str, kwargs: dict[str, Any]) -> str:
    """``"mlp(hidden=[16])"``: the name and the arguments that are not input or output sizes.

    Models that differ only in those sizes (Conv4s of 32x32 and 84x84 images) count as one
    architecture for the meta-model, whose sizes follow its own inputs.
    """
    shown = {k: v for k, v in sorted(kwargs.items()) if k not in _SIZES}
    return f"{arch}({', '.join(f'{k}={v}' for k, v in shown.items())})"


RECIPES: Registry[Callable[[RecipeContext], nn.Module]] = Registry("recipe")

EXPERIMENT_READS = ("recipe", "pool", "dataset", "data_root", "data_options", "device",
                    *(f"eval.{name}" for name in META_TEST_FIELDS))
"""What the experiment driver reads for every recipe (:func:`dfml.experiment.run_experiment`): the
meta-test protocol, not meta-validation's fine-tuning (:data:`META_TRAINING_READS`)."""
LOG_READS = ("log",)
"""Where every recipe's metrics go besides ``metrics.jsonl`` (:class:`~dfml.tensorboard.LogConfig`): a
recipe that logs nothing accepts it too, so that one setting serves every recipe of a command."""
META_MODEL_READS = ("train.n_way", "train.seed", "train.meta_arch", "train.meta_arch_kwargs", "train.meta_image_size")
"""What building the meta-model reads (:meth:`RecipeContext.meta_architecture`): every recipe reads it."""
META_TRAINING_READS = META_MODEL_READS + (
    "train.n_shot", "train.n_query", "train.meta_batch_size", "train.steps", "train.outer_lr", "train.val_every",
    "train.val_episodes", "train.checkpoint_every", "train.checkpoint_minutes", "train.budget_minutes",
    "train.meta_init", *(f"eval.{name}" for name in VALIDATION_FIELDS),
)
"""What the :class:`~dfml.datafree.trainer.MetaTrainer` loop reads (besides its learner's settings), its
meta-validation's fine-tuning (``eval.val_steps``/``val_lr``) included."""
INNER_LOOP_READS = ("train.inner_steps", "train.inner_lr", "train.first_order", "train.learn_inner_lr")
"""What a learner's inner loop reads (:meth:`~dfml.datafree.trainer.TrainConfig.inner_loop`): every MAML
learner's, the distilling one's included."""


@dataclass(frozen=True)
class RecipeSpec:
    """What a recipe reads of the configuration and needs of the pool, declared where it is registered.

    Attributes:
        reads: the :class:`~dfml.experiment.ExperimentConfig` keys the recipe reads besides the
            driver's own (:data:`EXPERIMENT_READS`, :data:`LOG_READS`): dotted sections (``"datafree"``) or fields
            (``"train.n_way"``); or a function of the resolved configuration returning them, for a
            recipe whose parts are chosen by the configuration.
        pool_classes: what each pool model's number of classes must be against ``train.n_way``:
            ``"any"`` (no task is drawn from a model), ``"at_least"`` (``n_way``-class tasks are drawn
            from each model) or ``"equal"`` (the models' heads are used as the meta-model's).
        check: more checks of the resolved configuration (``cfg -> None``, raising ``ValueError``),
            run with the others before any work starts.
        explain: ``(cfg, key) -> str``: why a key that ``reads`` leaves out under ``cfg`` is not
            read (e.g. ``" (read only with datafree.inverter=generator; it is metagen)"``), for the error.
        uses_data: the recipe trains on the dataset's real meta-train split (a reference that is
            not data-free, e.g. ``maml_data``); only such recipes get :attr:`RecipeContext.train_data`.
    """

    reads: tuple[str, ...] | Callable[[Any], tuple[str, ...]]
    pool_classes: str = "any"
    check: Callable[[Any], None] | None = None
    explain: Callable[[Any, str], str] | None = None
    uses_data: bool = False

    def __post_init__(self) -> None:
        if self.pool_classes not in ("any", "at_least", "equal"):
            raise ValueError(f"RecipeSpec.pool_classes must be 'any', 'at_least' or 'equal', got {self.pool_classes!r}")

    def keys(self, cfg: Any) -> tuple[str, ...]:
        """The keys the recipe reads under the resolved configuration ``cfg``, the driver's included."""
        return EXPERIMENT_READS + LOG_READS + (self.reads(cfg) if callable(self.reads) else self.reads)

    def check_pool(self, cfg: Any, pool: ModelPool) -> None:
        """Raise ``ValueError`` when ``pool`` cannot serve the recipe of ``cfg`` (see ``pool_classes``), or
        ``check`` refuses ``cfg``."""
        n_way = cfg.train.n_way
        averaged = "train.meta_init" in self.keys(cfg) and cfg.train.meta_init == "average"
        need = "equal" if averaged else self.pool_classes  # the averaged heads become the meta-model's
        for e in pool.entries:
            short = need == "at_least" and e.n_way < n_way
            if short or (need == "equal" and e.n_way != n_way):
                how = "at least" if short else "exactly"
                raise ValueError(
                    f"train.n_way={n_way} but pool model {e.index} has {e.n_way} classes: recipe {cfg.recipe!r} needs "
                    f"pool models of {how} train.n_way classes; set train.n_way and eval.n_way to "
                    f"{min(x.n_way for x in pool.entries)} or use another pool"
                )
        if self.check is not None:
            self.check(cfg)

    def unread(self, cfg: Any, key: str) -> bool:
        """Whether dotted ``key`` (a field or a section) is nothing the recipe reads under ``cfg``."""
        return not any(key == r or key.startswith(r + ".") or r.startswith(key + ".") for r in self.keys(cfg))


_SPECS: dict[str, RecipeSpec] = {}
_PRESETS: dict[str, Path] = {}
_ANY = RecipeSpec(reads=("train", "datafree"))


def register_recipe(name: str, spec: RecipeSpec, preset: str | Path | None = None,
                    ) -> Callable[[Callable[[RecipeContext], nn.Module]], Callable[[RecipeContext], nn.Module]]:
    """Register a recipe under ``name`` (in :data:`RECIPES`) with its :class:`RecipeSpec`.

    ``preset``: the YAML file of the recipe's settings (:func:`preset`) when it is not
    ``dfml/recipes/presets/<name>.yaml`` (a recipe outside the package, see docs/extending.md).

    Example:
        >>> @register_recipe("random", RecipeSpec(reads=META_MODEL_READS))
        ... def random_recipe(ctx): ...
    """
    register = RECIPES.register(name)
    if preset is not None and not Path(preset).is_file():
        raise FileNotFoundError(f"preset of recipe {name!r}: no file {str(preset)!r}; pass the path of its YAML file")

    def deco(fn: Callable[[RecipeContext], nn.Module]) -> Callable[[RecipeContext], nn.Module]:
        register(fn)
        _SPECS[name.lower()] = spec
        if preset is not None:
            _PRESETS[name.lower()] = Path(preset)
        return fn

    return deco


def recipe_spec(name: str) -> RecipeSpec:
    """The spec ``name`` was registered with (a recipe registered with ``RECIPES.register`` alone reads everything)."""
    RECIPES.get(name)  # unknown names raise with the valid ones
    return _SPECS.get(name.lower(), _ANY)


def check_reads(cfgs: Sequence[Any], keys: dict[str, str]) -> None:
    """Refuse a setting the user gave that no recipe of ``cfgs`` (resolved configurations) reads.

    Only what the user set (``--set``, ``--config``) is checked: presets and benchmark scripts set
    sections for every recipe at once. A key read by one of several recipes run by one command
    (``dfml eval --recipe random maml``) is accepted.

    Args:
        cfgs: the resolved configuration of each recipe the command runs.
        keys: each dotted key the user set, mapped to how (``"--set train.steps=5"``) for the message.

    Raises:
        ValueError: names the setting, the recipes, and those that would read it.
    """
    for key, given in keys.items():
        if all(recipe_spec(c.recipe).unread(c, key) for c in cfgs):
            names = ", ".join(repr(c.recipe) for c in cfgs)
            which = f"recipe {names} does not" if len(cfgs) == 1 else f"none of the recipes {names}"
            readers = [r for r in RECIPES.names() if not recipe_spec(r).unread(_as_recipe(cfgs[0], r), key)]
            hint = f", or choose a recipe that reads it ({', '.join(readers)})" if readers else ""
            why = _why_unread(cfgs[0], key) or moved_hint(key)
            raise ValueError(
                f"{given}: {which} read {key}{why}, so the run would record a setting it never used; drop it{hint} "
                "(only --set and --config values are checked: presets set sections for every recipe)"
            )


def _as_recipe(cfg: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(cfg, recipe=name)


def _why_unread(cfg: Any, key: str) -> str:
    explain = recipe_spec(cfg.recipe).explain
    return explain(cfg, key) if explain is not None else ""

PRESET_DIR = Path(__file__).parent / "presets"


def preset(name: str) -> dict[str, Any]:
    """The recipe's preset (``presets/<name>.yaml``, or the file it was registered with: the paper's
    settings as ExperimentConfig fields), or ``{}``."""
    RECIPES.get(name)  # unknown names raise with the valid ones
    path = _PRESETS.get(name.lower(), PRESET_DIR / f"{name.lower()}.yaml")
    if not path.is_file():
        return {}
    return load_yaml(path, what="preset")
