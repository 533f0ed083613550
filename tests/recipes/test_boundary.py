"""``datafree.boundary``: the meta-model reaches the generator inverters as the student of their boundary term."""

import pytest
import torch

from dfml.experiment import experiment_config, run_experiment
from dfml.inversion import generator as generator_module
from dfml.pool import build_toy_pool
from dfml.recipes.datafree import DataFreeConfig

from .test_paper_recipes import TINY


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return build_toy_pool(tmp_path_factory.mktemp("pool"), n_models=4, seed=0)


def _run(recipe, pool, path, **datafree):
    cfg = experiment_config(recipe, TINY, {"pool": str(pool.root), "train": {"steps": 2, "checkpoint_every": 2},
                                           "datafree": datafree})
    run_experiment(cfg, path)
    return torch.load(path / "model.pt", weights_only=True)


# the black-box inverter's own boundary term is off unless its weight is set (blackbox_inverter.py)
ON = {"robust": {}, "free": {}, "bidf_mkd": {"blackbox": {"boundary_weight": 1.0}}}


@pytest.mark.parametrize("recipe", ["robust", "free", "bidf_mkd"])
def test_the_boundary_term_reaches_the_inverter_and_changes_what_is_recovered(recipe, pool, tmp_path, monkeypatch):
    seen = []
    original = generator_module.boundary_loss

    def spy(student_logits, teacher_logits):
        seen.append(student_logits.shape)
        return original(student_logits, teacher_logits)

    monkeypatch.setattr(generator_module, "boundary_loss", spy)
    off = _run(recipe, pool, tmp_path / "off", **ON[recipe])
    assert not seen  # off by default: no student, whatever boundary_weight says
    on = _run(recipe, pool, tmp_path / "on", boundary=True, **ON[recipe])
    assert bool(seen) == (recipe != "bidf_mkd")  # white-box generators use the shared loss
    assert max(float((on[k] - off[k]).abs().max()) for k in off) > 1e-3, recipe


def test_with_a_zero_weight_the_handed_over_student_changes_nothing(pool, tmp_path):
    """The term is the only difference; with a student each model is inverted alone instead of in a
    stacked batch, hence rounding-sized differences only."""
    off = _run("robust", pool, tmp_path / "off")
    zero = _run("robust", pool, tmp_path / "zero", boundary=True, generator={"boundary_weight": 0.0})
    for k in off:
        torch.testing.assert_close(zero[k], off[k], rtol=1e-4, atol=1e-5, msg=k)


def test_the_boundary_needs_an_inverter_that_takes_a_student():
    with pytest.raises(ValueError, match=r"datafree.boundary hands the meta-model to a generator/metagen/blackbox "
                                         r"inverter, not to 'pixel'.*Set datafree.boundary=false"):
        DataFreeConfig(inverter="pixel", boundary=True)
