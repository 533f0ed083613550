"""The resume check every recipe test makes: a run killed mid-training resumes to the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dfml.experiment import ExperimentConfig, run_experiment


class Kill(Exception):
    """Raised from the progress callback: the run dies there, as on a kill."""


def check_a_killed_run_resumes_to_the_same_model(cfg: ExperimentConfig, tmp_path: Path,
                                                 kill_at: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``cfg`` whole in ``tmp_path/full`` and killed at train step ``kill_at`` then resumed in
    ``tmp_path/killed``; assert the same weights and per-episode scores; return both results."""
    full = run_experiment(cfg, tmp_path / "full")

    def kill(stage: str, i: int, n: int, info: dict) -> None:
        if stage == "train" and i == kill_at:
            raise Kill

    with pytest.raises(Kill):
        run_experiment(cfg, tmp_path / "killed", progress=kill)
    resumed = run_experiment(cfg, tmp_path / "killed")
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), (cfg.recipe, k)
    for shot, score in full["scores"].items():
        assert resumed["scores"][shot]["per_episode"] == score["per_episode"]
    return full, resumed
