"""REINFORCE reliability weigher: learn which pool models are worth inverting."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .base import SELECTORS, Selector, check_ids, check_reward
from .plackett_luce import gumbel_top_k, plackett_luce_log_prob

__all__ = ["ReliabilityConfig", "ReliabilityWeigher"]

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class ReliabilityConfig:
    """Settings of :class:`ReliabilityWeigher`.

    Attributes:
        lr: learning rate of the logits (``> 0``).
        optimizer: ``"adam"`` or ``"sgd"`` (plain gradient steps, no momentum).
        baseline_momentum: ``m`` in ``b <- m * b + (1 - m) * reward``, in ``[0, 1)``.
        baseline_init: the baseline before the first reward.
        entropy_coef: weight of the entropy bonus ``H(softmax(logits))`` (``>= 0``; keeps
            exploring, stops the weights from collapsing on one model too early).
        log_weights: add ``w/<id>`` for every model to the metrics returned by ``update``.
    """

    lr: float = 0.05
    optimizer: str = "adam"
    baseline_momentum: float = 0.9
    baseline_init: float = 0.0
    entropy_coef: float = 0.0
    log_weights: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.lr, (int, float)) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"reliability.lr must be a positive number, got {self.lr!r}; e.g. lr=0.05")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"reliability.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not 0.0 <= self.baseline_momentum < 1.0:
            raise ValueError(
                f"reliability.baseline_momentum must be in [0, 1), got {self.baseline_momentum!r}; "
                "0 uses the last reward as baseline, 0.9 averages about the last 10"
            )
        if not self.entropy_coef >= 0.0:
            raise ValueError(f"reliability.entropy_coef must be >= 0, got {self.entropy_coef!r}; 0 disables it")


@SELECTORS.register("reliability")
class ReliabilityWeigher(Selector):
    """One learnable logit per pool model; models are drawn from ``softmax(logits)`` and trained by REINFORCE.

    ``select(n)`` draws ``n`` distinct models in order from the Plackett-Luce distribution of the
    logits (Gumbel-top-k with the caller's generator). ``update(ids, reward)`` takes one optimiser
    step on ``-(reward - b) * log P(ids) - entropy_coef * H(softmax(logits))`` with the exact
    ordered log-probability ``log P(ids)`` and a moving-average baseline ``b`` (the baseline before
    this reward; it is then moved towards the reward). Models whose tasks keep helping the
    meta-learner gain weight; untrustworthy ones lose it.

    Args:
        n_models: pool size.
        config: a :class:`ReliabilityConfig`; keyword arguments override its fields.

    Example:
        >>> weigher = ReliabilityWeigher(10, lr=0.05)
        >>> ids = weigher.select(4, gen)
        >>> metrics = weigher.update(ids, reward)   # {"reward", "baseline", "advantage", ..., "w/0", ...}
        >>> weigher.history()                        # weights after each update, [n_updates, n_models]

    References:
        Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning" (reliability weigher), 2023;
        Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
        learning", Machine Learning 1992.
    """

    learns = True

    def __init__(self, n_models: int, config: ReliabilityConfig | None = None, **overrides: Any) -> None:
        super().__init__(n_models)
        config = config or ReliabilityConfig()
        self.config = ReliabilityConfig(**{**asdict(config), **overrides}) if overrides else config
        self.logits = nn.Parameter(torch.zeros(n_models, dtype=torch.float64))
        if self.config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam([self.logits], lr=self.config.lr)
        else:
            self.optimizer = torch.optim.SGD([self.logits], lr=self.config.lr)
        self.baseline = float(self.config.baseline_init)
        self.n_updates = 0
        self._history: list[Tensor] = []

    def select(self, n: int, generator: torch.Generator) -> list[int]:
        """``n`` distinct ids, the first drawn first, from the Plackett-Luce distribution of the logits."""
        self._check_select(n, generator)
        return gumbel_top_k(self.logits, n, generator)

    def log_prob(self, ids: Sequence[int]) -> Tensor:
        """Exact ``log P(ids)`` of this ordered draw under the current logits (0-d, differentiable)."""
        return plackett_luce_log_prob(self.logits, check_ids(ids, self.n_models))

    def update(self, ids: Sequence[int], reward: float | Tensor) -> dict[str, float]:
        """One REINFORCE step for the draw ``ids`` (as returned by ``select``) that earned ``reward``.

        Args:
            ids: the selected ids, in the order drawn.
            reward: one number for the whole selection (float or one-element tensor).

        Returns:
            ``reward``, ``baseline`` (before this reward), ``advantage``, ``log_prob``, ``entropy``,
            ``max_weight`` and, with ``log_weights``, ``w/<id>`` for every model.
        """
        ids = check_ids(ids, self.n_models)
        reward = check_reward(reward)
        advantage = reward - self.baseline
        self.optimizer.zero_grad(set_to_none=True)
        log_prob = plackett_luce_log_prob(self.logits, ids)
        probs = torch.softmax(self.logits, dim=0)
        entropy = -(probs * torch.log_softmax(self.logits, dim=0)).sum()
        loss = -advantage * log_prob - self.config.entropy_coef * entropy
        loss.backward()
        self.optimizer.step()
        metrics = {
            "reward": reward,
            "baseline": self.baseline,
            "advantage": advantage,
            "log_prob": float(log_prob.detach()),
            "entropy": float(entropy.detach()),
        }
        m = self.config.baseline_momentum
        self.baseline = m * self.baseline + (1.0 - m) * reward
        self.n_updates += 1
        w = self.weights()
        self._history.append(w)
        metrics["max_weight"] = float(w.max())
        if self.config.log_weights:
            metrics.update({f"w/{i}": float(v) for i, v in enumerate(w)})
        return metrics

    def weights(self) -> Tensor:
        """``softmax(logits)``, ``[n_models]`` float64, detached."""
        return torch.softmax(self.logits.detach(), dim=0).clone()

    def history(self) -> Tensor:
        """Weights after each update, ``[n_updates, n_models]`` (empty ``[0, n_models]`` before any)."""
        if not self._history:
            return torch.zeros(0, self.n_models, dtype=torch.float64)
        return torch.stack(self._history)

    def state_dict(self) -> dict[str, Any]:
        """Logits, optimiser state, baseline, update count, weight history and config (copies)."""
        return {
            "n_models": self.n_models,
            "logits": self.logits.detach().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "baseline": self.baseline,
            "n_updates": self.n_updates,
            "history": self.history().clone(),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore exactly (the next ``select``/``update`` match those of the saved run).

        The config is not restored: the weigher keeps the one it was built with.
        """
        super().load_state_dict(state)
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.baseline = float(state["baseline"])
        self.n_updates = int(state["n_updates"])
        self._history = list(state["history"].clone().unbind(0))

    def __repr__(self) -> str:
        return f"ReliabilityWeigher(n_models={self.n_models}, n_updates={self.n_updates}, config={self.config})"
