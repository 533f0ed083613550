"""docs/extending.md cannot rot: its examples (examples/extending/) run here on the toy world, and
every code block of the page is a verbatim excerpt of the file it names."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from dfml.datafree.build import BUILD_INVERTER, BUILD_SELECTOR, BUILD_UPDATE
from dfml.experiment import experiment_config
from dfml.inversion import INVERTERS
from dfml.meta import UPDATES, MAML
from dfml.models import build_model
from dfml.pool import build_toy_pool
from dfml.recipes import base as recipes_base
from dfml.recipes import RECIPES
from dfml.selection import SELECTORS

from .recipes.resume import check_a_killed_run_resumes_to_the_same_model

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "extending.md"
REGISTRIES = (INVERTERS, BUILD_INVERTER, SELECTORS, BUILD_SELECTOR, UPDATES, BUILD_UPDATE, RECIPES)

TINY = {"dataset": "toy",
        "train": {"n_query": 3, "meta_batch_size": 2, "steps": 4, "inner_steps": 1, "inner_lr": 0.1,
                  "val_every": 2, "val_episodes": 4, "checkpoint_every": 1},
        "eval": {"episodes": 6, "shots": [1]}}


@pytest.fixture
def extending() -> Iterator[ModuleType]:
    """The ``extending`` examples imported (their parts registered), and every registry as it was afterwards."""
    saved = [dict(r._items) for r in REGISTRIES] + [dict(recipes_base._SPECS), dict(recipes_base._PRESETS)]
    sys.path.insert(0, str(REPO / "examples"))
    try:
        yield importlib.import_module("extending.best_of_recipe")
    finally:
        sys.path.remove(str(REPO / "examples"))
        for name in [m for m in sys.modules if m == "extending" or m.startswith("extending.")]:
            del sys.modules[name]
        for r, items in zip(REGISTRIES, saved):
            r._items = items
        recipes_base._SPECS, recipes_base._PRESETS = saved[-2], saved[-1]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return build_toy_pool(tmp_path_factory.mktemp("pool"), n_models=4, seed=0)


def test_the_best_of_inverter_keeps_inputs_the_teacher_gives_their_label(extending, pool):
    inverter = INVERTERS.get("best_of")((32,))
    teacher = pool.load(0)
    task = inverter.invert(teacher, 2, 3, torch.Generator().manual_seed(0), model_id=0)
    n_way = pool.entry(0).n_way
    assert task.support_x.shape == (n_way * 2, 32) and task.query_x.shape == (n_way * 3, 32)
    with torch.no_grad():
        assert torch.equal(teacher(task.support_x).argmax(-1), task.support_y)
    assert inverter.cost.teacher_queries == 2 + n_way * 5 * 8  # the class probe, then 8 candidates an input
    assert inverter.cost.images == n_way * 5
    with pytest.raises(ValueError, match="candidates must be an integer >= 1, got 0"):
        INVERTERS.get("best_of")((32,), candidates=0)


def test_the_round_robin_selector_visits_models_in_turn_and_resumes_where_it_stopped(extending):
    sel = SELECTORS.get("round_robin")(5)
    g = torch.Generator()
    assert [sel.select(2, g), sel.select(2, g), sel.select(2, g)] == [[0, 1], [2, 3], [4, 0]]
    again = SELECTORS.get("round_robin")(5)
    again.load_state_dict(sel.state_dict())
    assert again.select(3, g) == sel.select(3, g) == [1, 2, 3]
    with pytest.raises(ValueError, match="saved for n_models=5"):
        SELECTORS.get("round_robin")(4).load_state_dict(sel.state_dict())


def test_the_clipped_update_clips_the_meta_gradient_and_reports_its_norm(extending, pool):
    torch.manual_seed(0)
    learner = MAML(build_model("mlp", in_features=32, num_classes=5, hidden=[16]), inner_steps=1, inner_lr=0.1)
    task = INVERTERS.get("best_of")((32,)).invert(pool.load(0), 1, 3, torch.Generator().manual_seed(0))
    before = {k: v.detach().clone() for k, v in learner.named_parameters()}
    opt = torch.optim.SGD(learner.parameters(), lr=1.0)
    out = UPDATES.get("clipped")(max_norm=1e-3)(learner, [task], opt)
    assert set(out) == {"loss", "acc", "grad_norm"} and out["grad_norm"] > 1e-3
    moved = torch.cat([(p.detach() - before[k]).flatten() for k, p in learner.named_parameters()])
    assert moved.norm().item() == pytest.approx(1e-3, rel=1e-4)  # one SGD step of the clipped gradient


def test_the_best_of_recipe_trains_from_its_preset_and_a_killed_run_resumes_to_the_same_model(
        extending, pool, tmp_path):
    cfg = experiment_config("best_of", TINY, {"pool": str(pool.root)})
    assert (cfg.datafree.inverter, cfg.datafree.selector, cfg.datafree.update) == ("best_of", "round_robin", "clipped")
    full, _ = check_a_killed_run_resumes_to_the_same_model(cfg, tmp_path)
    assert full["info"]["steps"] == 4 and full["info"]["inversion_cost"]["steps"] == 0
    assert 0 <= full["scores"]["5way_1shot"]["mean"] <= 100


def test_a_recipe_registered_with_a_missing_preset_file_is_refused_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"preset of recipe 'nothing': no file .*nothing\.yaml"):
        recipes_base.register_recipe("nothing", recipes_base.RecipeSpec(reads=()), preset=tmp_path / "nothing.yaml")
    assert "nothing" not in RECIPES


def test_the_examples_leave_no_part_registered_behind():
    assert "best_of" not in INVERTERS and "round_robin" not in SELECTORS and "best_of" not in RECIPES


_BLOCK = re.compile(r"^```(?:python|yaml)\n# (examples/extending/[\w.]+)\n(.*?)^```", re.S | re.M)


def test_every_code_block_of_the_page_is_an_excerpt_of_the_example_it_names():
    blocks = _BLOCK.findall(PAGE.read_text())
    assert {f for f, _ in blocks} >= {"examples/extending/best_of_inverter.py", "examples/extending/round_robin.py",
                                      "examples/extending/clipped_update.py", "examples/extending/best_of_recipe.py",
                                      "examples/extending/best_of.yaml"}
    for path, code in blocks:
        assert code in (REPO / path).read_text(), f"a block of docs/extending.md is no longer in {path}"
