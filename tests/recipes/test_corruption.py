"""With 40% untrustworthy models, the reliability weigher moves its weight onto the trusted ones.

Measured alongside (toy world, 200 steps, the same 100 test episodes, 1-shot; paired difference
to an oracle trained on the 6 trusted models alone, all 2026-11-24, run_experiment with these settings):

    oracle (trusted 6 only)            64.72 +- 2.31
    corrupted pool, weigher            64.45 +- 1.98   -0.27 +- 1.94   (97% weight on trusted)
    corrupted pool, weigher + forget   64.28 +- 2.13   -0.44 +- 1.90   (memory forgetting, forget_below=0.5)
    corrupted pool, uniform selector   63.29 +- 2.16   -1.43 +- 1.84
    clean 10-model pool                70.6            (earlier run)

The weigher recovers the oracle's accuracy: what the corrupted pool costs against the clean one is
the 4 good models it lacks, not the bad ones it holds. Forgetting the distrusted models' memory
entries changes nothing measurable here (the weigher finds them within a few dozen steps).
"""

import pytest

from dfml.experiment import experiment_config, run_experiment
from dfml.pool import build_toy_pool


@pytest.mark.slow
def test_reliability_weigher_moves_its_weight_onto_trusted_models(tmp_path):
    bad = build_toy_pool(tmp_path / "bad", n_models=10, seed=0, untrustworthy_ratio=0.4)
    trust = [e.trust for e in bad.entries]
    assert trust.count("trusted") == 6
    cfg = experiment_config("robust", {
        "pool": str(bad.root), "dataset": "toy",
        "train": {"n_query": 10, "meta_batch_size": 4, "steps": 200, "inner_steps": 3, "inner_lr": 0.1,
                  "outer_lr": 3e-3, "val_every": 200, "val_episodes": 30, "test_inner_lr": 0.1,
                  "checkpoint_every": 1000},
        "eval": {"episodes": 50, "shots": [1], "lr": 0.1},
        "datafree": {"inverter": "pixel", "pixel": {"steps": 30, "l2_weight": 0.05}}})
    w = run_experiment(cfg, tmp_path / "run")["info"]["reliability_weights"]
    on_trusted = sum(x for x, t in zip(w, trust) if t == "trusted")
    assert on_trusted > 0.8, w  # uniform would be 0.6
