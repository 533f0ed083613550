"""With 40% untrustworthy models, the reliability weigher moves its weight onto trusted ones and
``robust`` keeps most of its accuracy, while the same recipe with a uniform selector loses more."""

import pytest

from dfml.experiment import experiment_config, run_experiment
from dfml.pool import build_toy_pool


@pytest.mark.slow
def test_reliability_weigher_protects_against_a_corrupted_pool(tmp_path):
    clean = build_toy_pool(tmp_path / "clean", n_models=10, seed=0)
    bad = build_toy_pool(tmp_path / "bad", n_models=10, seed=0, untrustworthy_ratio=0.4)
    trust = [e.trust for e in bad.entries]
    assert trust.count("trusted") == 6

    def run(pool, selector):
        cfg = experiment_config("robust", {
            "pool": str(pool.root), "dataset": "toy",
            "train": {"n_query": 10, "meta_batch_size": 4, "steps": 200, "inner_steps": 3, "inner_lr": 0.1,
                      "outer_lr": 3e-3, "val_every": 50, "val_episodes": 30, "test_inner_lr": 0.1,
                      "checkpoint_every": 1000},
            "eval": {"episodes": 200, "shots": [1], "lr": 0.1, "episodes_dir": str(tmp_path / "eps")},
            "datafree": {"selector": selector, "inverter": "pixel", "pixel": {"steps": 30, "l2_weight": 0.05}}})
        return run_experiment(cfg, tmp_path / f"{pool.root.name}-{selector}")

    weighted = run(bad, "reliability")
    w = weighted["info"]["reliability_weights"]
    on_trusted = sum(x for x, t in zip(w, trust) if t == "trusted")
    assert on_trusted > 0.8, w
    acc = {k: r["scores"]["5way_1shot"]["mean"] for k, r in {
        "clean": run(clean, "reliability"), "weighted": weighted, "uniform": run(bad, "uniform")}.items()}
    assert acc["clean"] - acc["weighted"] < 0.5 * (acc["clean"] - acc["uniform"]), acc
