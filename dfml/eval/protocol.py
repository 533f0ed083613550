"""The meta-test protocol: fine-tune a copy on each support set, score the query set."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..meta.inner import functional_forward, inner_update
from ..meta.learner import Learner
from ..meta.protonet import ProtoNet
from ..models.norm import use_batch_stats
from ..types import Params, Task
from .calibration import CalibrationConfig, calibrate, episode_generator
from .stats import EvalResult, mean_ci95, paired

__all__ = ["METHODS", "evaluate", "evaluate_sharded", "feature_extractor"]

logger = logging.getLogger(__name__)

METHODS = ("finetune", "protonet")


class _Features(nn.Module):
    """Wraps a model that has a ``features(x)`` method so it can be called functionally."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.features(x)


def feature_extractor(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that outputs features instead of logits (for the ProtoNet head).

    The features are, in order of preference: ``model.features(x)`` when the model defines such a
    method; otherwise the output of a copy of the model whose ``head`` attribute is replaced by
    ``nn.Identity`` (the convention of dfml backbones: the classifier is a module named ``head``).
    ``model`` itself is not modified.

    Raises:
        ValueError: the model has neither a ``features`` method nor a ``head`` submodule.
    """
    if callable(getattr(model, "features", None)) and not isinstance(getattr(model, "features"), nn.Module):
        return _Features(copy.deepcopy(model))
    if isinstance(getattr(model, "head", None), nn.Module):
        out = copy.deepcopy(model)
        out.head = nn.Identity()
        return out
    raise ValueError(
        f"method='protonet' needs features, but {type(model).__name__} has neither a features(x) method "
        "nor a submodule named 'head'; add one of them, or pass an encoder whose output is the embedding "
        "wrapped as ProtoNet(encoder)"
    )


def _prepare(model: nn.Module, method: str, device: torch.device | str | None) -> tuple[nn.Module, str]:
    """A private, batch-statistics copy of the network to score (features only for protonet)."""
    if isinstance(model, ProtoNet):  # its network is an encoder: no head to fine-tune
        if method != "protonet":
            logger.info("a ProtoNet learner is scored with method='protonet' (it has no classifier head)")
        net, method = copy.deepcopy(model.network), "protonet"
    else:
        if isinstance(model, Learner):
            model = model.network
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or a dfml Learner, got {type(model).__name__}")
        net = feature_extractor(model) if method == "protonet" else copy.deepcopy(model)
    use_batch_stats(net)
    net.eval()  # dropout off; BatchNorm already uses batch statistics whatever the mode
    if device is not None:
        net.to(device)
    return net, method


def _check_head(logits: Tensor, n_way: int) -> None:
    if logits.dim() != 2 or logits.shape[1] != n_way:
        raise ValueError(
            f"the model outputs {tuple(logits.shape[1:])} values per example but the episodes are {n_way}-way; "
            f"fine-tuning needs a head with n_way={n_way} outputs: build the model with {n_way} classes or "
            f"replace its head (e.g. model.head = nn.Linear(in_features, {n_way}))"
        )


def _finetune(net: nn.Module, task: Task, steps: int, lr: float, checked: set[int], lr_setting: str) -> Params:
    params = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in net.named_parameters()}
    if task.n_way not in checked:  # one extra forward per distinct n_way
        with torch.no_grad():
            _check_head(functional_forward(net, params, task.support_x), task.n_way)
        checked.add(task.n_way)
    with torch.enable_grad():
        return inner_update(net, params, task.support_x, task.support_y, steps=steps, lr=lr, first_order=True,
                            lr_setting=lr_setting)


def _score(pred: Tensor, task: Task) -> tuple[float, bool]:
    """Query accuracy in percent, and whether every query got the same class (one host sync)."""
    acc, one = torch.stack([(pred == task.query_y).double().mean(), (pred == pred[0]).all().double()]).tolist()
    return acc * 100.0, bool(one)


def _query_accuracy(net: nn.Module, fast: Params, task: Task) -> tuple[float, bool]:
    with torch.no_grad():
        logits = functional_forward(net, {k: v.detach() for k, v in fast.items()}, task.query_x)
    return _score(logits.argmax(-1), task)


def _protonet_accuracy(head: ProtoNet, task: Task) -> tuple[float, bool]:
    with torch.no_grad():
        pred = head.predict(head.params(), task)
    return _score(pred, task)


def mean_ci(scores: list[float]) -> tuple[float, float]:
    if len(scores) == 1:
        logger.warning("a single episode was scored; its 95%% interval is undefined (nan)")
        return scores[0], math.nan
    return mean_ci95(scores)


class _Calibrated:
    """The calibration arm of ``evaluate``: calibrates each adapted model, keeps the uncalibrated scores."""

    def __init__(self, config: CalibrationConfig, lr: float, names: Mapping[str, str]) -> None:
        self.config, self.lr = config, lr
        own = names["calibration.lr"]
        self.lr_setting = own if config.lr is not None else f"{own} (unset: it follows {names['lr']})"
        self.uncalibrated: list[float] = []
        self.pseudo_acc: list[float] = []
        self.teacher_queries, self.seconds = 0, 0.0

    def __call__(self, net: nn.Module, fast: Params, task: Task, index: int) -> tuple[float, bool]:
        self.uncalibrated.append(_query_accuracy(net, fast, task)[0])
        with torch.enable_grad():  # only the support set goes in: calibration cannot see the query set
            fast, info = calibrate(net, fast, task.support_x, task.support_y, self.config,
                                   episode_generator(self.config.seed, index), lr=self.lr,
                                   lr_setting=self.lr_setting)
        if info["pseudo_acc"] is not None:
            self.pseudo_acc.append(info["pseudo_acc"])
        self.teacher_queries += info["teacher_queries"]
        self.seconds += info["seconds"]
        return _query_accuracy(net, fast, task)

    def info(self, scores: list[float]) -> dict[str, Any]:
        mean, ci = mean_ci(self.uncalibrated)
        return {
            **dataclasses.asdict(self.config),
            "uncalibrated": {"mean": mean, "ci95": ci, "per_episode": list(self.uncalibrated)},
            "paired": paired(scores, self.uncalibrated) if len(scores) > 1 else None,
            "pseudo_acc": sum(self.pseudo_acc) / len(self.pseudo_acc) if self.pseudo_acc else None,
            "pseudo_episodes": len(self.pseudo_acc),
            "teacher_queries": self.teacher_queries,
            "seconds": self.seconds,
        }


def evaluate(
    model: nn.Module,
    tasks: Iterable[Task],
    *,
    steps: int = 10,
    lr: float = 0.01,
    method: str = "finetune",
    device: torch.device | str | None = None,
    first_n: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    calibration: CalibrationConfig | None = None,
    episode_start: int = 0,
    episode_stride: int = 1,
    settings: Mapping[str, str] | None = None,
) -> EvalResult:
    """Meta-test ``model`` on ``tasks``: per-episode query accuracy, its mean and 95% interval.

    ``method="finetune"`` (the protocol of the DFML papers): for each task, a fresh copy of the
    model's parameters takes ``steps`` SGD steps of size ``lr`` on the support set (first order,
    no graph kept), then the query set is scored. ``method="protonet"``: no fine-tuning
    (``steps``/``lr`` are ignored); queries go to the nearest class mean of the support features
    (see ``feature_extractor`` for where the features come from). A ``ProtoNet`` learner is
    always scored with ``protonet`` (its encoder has no head); a ``MAML`` learner is unwrapped. In both, BatchNorm uses batch statistics (``use_batch_stats`` on a private copy):
    support while adapting, query while scoring, so no episode influences another and the
    result does not depend on the model's train/eval mode or on the order of the episodes.

    With an enabled ``calibration`` (``finetune`` only), every adapted model is also calibrated
    (:func:`dfml.eval.calibration.calibrate`: inversion of the adapted model, then fine-tuning on
    support + inverted pseudo-support, from the support set alone) and the query set scored again.
    The result's scores are the calibrated ones; ``info["calibration"]`` holds the settings, the
    uncalibrated scores of the same episodes and adaptations (``"uncalibrated"``) and the paired
    difference calibrated - uncalibrated (``"paired"``, see :func:`dfml.eval.paired`).

    A diverged or degenerate result is an error, never a score: every fine-tune (and calibration)
    is checked once at its end (:func:`dfml.meta.inner.check_finetune`: a loss or weight that is
    not finite), and a model that answers one class for every query of every episode (two or more
    episodes) is refused: with balanced query sets that is exactly chance with zero spread, a
    number that says nothing about the model (a collapsed meta-model, or a fine-tune that wrecked
    it). A model that does so on some episodes only is scored as usual.

    Args:
        model: the meta-model (an ``nn.Module``, or a ``MAML``/``ProtoNet`` learner); not modified.
            With ``finetune`` its output size must equal each task's ``n_way``.
        tasks: the episodes (fix them, e.g. by seed, to compare methods with ``paired``).
        steps: fine-tuning steps per episode.
        lr: fine-tuning step size.
        method: ``"finetune"`` or ``"protonet"``.
        device: where to run (default: the model's device); episodes are moved there.
        first_n: score only the first ``first_n`` episodes.
        progress: called as ``progress(episodes_done, accuracy_percent)`` after each episode.
        calibration: inversion calibration after the inner loop (``None`` or disabled: none).
        episode_start, episode_stride: the ``i``-th task is episode ``episode_start + i *
            episode_stride`` of the whole list (calibration draws that episode's generator);
            :func:`evaluate_sharded` sets them for each rank's share.
        settings: the caller's configuration names of ``"lr"``, ``"steps"`` and
            ``"calibration.lr"`` (e.g. ``{"lr": "eval.lr"}``), named by the errors below; a name
            not given is shown as the argument's own.

    Returns:
        ``EvalResult`` with accuracies in percent.

    Raises:
        ValueError: an unknown method, bad ``steps``/``first_n``/``settings``, no episodes,
            (finetune) a head whose output size is not ``n_way``, or calibration with ``protonet``.
        FloatingPointError: a fine-tune or calibration diverged (names the step size's setting).
        RuntimeError: a degenerate result (one class for every query of every episode).
    """
    result, one_class = evaluate_episodes(model, tasks, steps=steps, lr=lr, method=method, device=device, first_n=first_n,
                                  progress=progress, calibration=calibration, episode_start=episode_start,
                                  episode_stride=episode_stride, settings=settings)
    check_degenerate(result, one_class, setting_names(settings))
    return result


def evaluate_episodes(
    model: nn.Module,
    tasks: Iterable[Task],
    *,
    steps: int,
    lr: float,
    method: str,
    device: torch.device | str | None,
    first_n: int | None,
    progress: Callable[[int, float], None] | None,
    calibration: CalibrationConfig | None,
    episode_start: int,
    episode_stride: int,
    settings: Mapping[str, str] | None,
) -> tuple[EvalResult, list[bool]]:
    """:func:`evaluate` without the degenerate-result check; also returns, per episode, whether every
    query got the same class (so that :func:`evaluate_sharded` can check the gathered episodes)."""
    names = setting_names(settings)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    check_first_n(first_n)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    net, method = _prepare(model, method, device)
    cal = _calibration_arm(calibration, method, lr, names)
    head = ProtoNet(net) if method == "protonet" else None
    p = next(net.parameters(), None)
    dev, dtype = (p.device, p.dtype) if p is not None else (torch.device(device or "cpu"), None)
    start, scores, one_class, checked = time.perf_counter(), [], [], set()
    for i, task in enumerate(tasks):
        if first_n is not None and i >= first_n:
            break
        task = task.to(dev, dtype=dtype)
        if head is not None:
            acc, one = _protonet_accuracy(head, task)
        else:
            fast = _finetune(net, task, steps, lr, checked, names["lr"])
            index = episode_start + i * episode_stride
            acc, one = cal(net, fast, task, index) if cal is not None else _query_accuracy(net, fast, task)
        scores.append(acc)
        one_class.append(one)
        if progress is not None:
            progress(i + 1, acc)
    if not scores:
        raise ValueError("no episodes to evaluate: tasks was empty")
    info: dict[str, Any] = {"method": method, "steps": steps if method == "finetune" else 0,
                            "lr": lr if method == "finetune" else 0.0}
    if cal is not None:
        info["calibration"] = cal.info(scores)
    return result_of(scores, time.perf_counter() - start, info), one_class


_SETTINGS = ("lr", "steps", "calibration.lr")


def setting_names(settings: Mapping[str, str] | None) -> dict[str, str]:
    """The configuration name of each setting errors may name (default: the argument's own name)."""
    unknown = sorted(set(settings or {}) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"settings names {unknown}, which evaluate does not take; name some of {list(_SETTINGS)}")
    return {**{k: k for k in _SETTINGS}, **(settings or {})}


def check_degenerate(result: EvalResult, one_class: list[bool], names: dict[str, str]) -> None:
    """Refuse a result where the model answered one class for every query of every episode (n >= 2)."""
    if result.n < 2 or not all(one_class):
        return
    info = result.info
    if info["method"] == "finetune":
        fix = (f"check the fine-tune's {names['lr']} (now {info['lr']:g}) and {names['steps']} (now {info['steps']}), "
               "then the meta-model itself (it may have collapsed)")
    else:
        fix = "its features do not tell the inputs apart: check the meta-model (it may have collapsed)"
    raise RuntimeError(
        f"degenerate result: the model answered one class for every query of all {result.n} episodes "
        f"({result.mean:.2f} ± {result.ci95:.2f}), so the number measures nothing and is not reported; {fix}"
    )


def check_first_n(first_n: int | None) -> None:
    if first_n is not None and (isinstance(first_n, bool) or not isinstance(first_n, int) or first_n < 1):
        raise ValueError(f"first_n must be a positive integer or None, got {first_n!r}")


def result_of(scores: list[float], seconds: float, info: dict[str, Any]) -> EvalResult:
    mean, ci = mean_ci(scores)
    logger.info("evaluation (%s) over %d episodes: %.2f ± %.2f %% (%.1f s)", info["method"], len(scores), mean, ci,
                seconds)
    return EvalResult(mean=mean, ci95=ci, n=len(scores), per_episode=scores, seconds=seconds, info=info)


def _calibration_arm(
    calibration: CalibrationConfig | None, method: str, lr: float, names: dict[str, str]
) -> _Calibrated | None:
    if calibration is not None and not isinstance(calibration, CalibrationConfig):
        raise TypeError(f"calibration must be a dfml.eval.CalibrationConfig or None, got {type(calibration).__name__}")
    if calibration is None or not calibration.enabled:
        return None
    if method != "finetune":
        raise ValueError(
            f"inversion calibration refines fine-tuned weights, but method={method!r} does not fine-tune; "
            "use method='finetune' or disable the calibration"
        )
    return _Calibrated(calibration, lr, names)
