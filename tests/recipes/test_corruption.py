"""With 40% untrustworthy models, ``robust`` finds the trusted ones and loses much less than without its weigher.

The pool: 10 toy MLPs, 4 of them untrustworthy: 2 untrained, 2 *deceptive* (they advertise the
toy world's classes but were trained in another toy world, whose classes live in other signal
directions; deceptive models trained on other classes of the same world would still give good
meta-training tasks and barely hurt). The reference for each arm is the same arm trained on the 6
trusted models alone, so the loss is what the bad models cost, not the good models they replaced.

Measured with ``python benchmarks/toy_corruption.py --out runs/toy-corruption`` (200 steps, pixel
inversion, 5 seeds, the same 600 test episodes, per-episode accuracy averaged over the seeds; loss
against the 6 trusted models alone, 1-shot / 5-shot; benchmarks/results/toy_corruption.json):

    uniform selector                          -9.71 +- 0.52 / -6.95 +- 0.36
    reliability weigher, memory kept          -8.52 +- 0.48 / -5.53 +- 0.30   (97% weight on trusted)
    reliability weigher + forgetting (robust) -2.64 +- 0.44 / -2.54 +- 0.26   (forget_below: 0.5)

The weigher alone finds the bad models within a few dozen steps but the task memory keeps replaying
(and interpolating) what they gave before; forgetting their entries is what recovers the accuracy.
On a clean 10-model pool forgetting costs -0.56 +- 0.22 / -0.51 +- 0.12.
"""

import pytest

from dfml.data.toy import make_toy_world
from dfml.experiment import experiment_config, run_experiment
from dfml.pool import build_toy_pool, subset_pool

SEEDS = (0, 1, 2)


def _run(pool, selector: str, seed: int, out) -> dict:
    cfg = experiment_config("robust", {
        "pool": str(pool.root), "dataset": "toy",
        "train": {"n_query": 10, "meta_batch_size": 4, "steps": 200, "inner_steps": 3, "inner_lr": 0.1,
                  "outer_lr": 3e-3, "val_every": 200, "val_episodes": 30, "test_inner_lr": 0.1,
                  "checkpoint_every": 1000, "seed": seed},
        "eval": {"episodes": 300, "shots": [1], "lr": 0.1},
        "datafree": {"inverter": "pixel", "pixel": {"steps": 30, "l2_weight": 0.05}, "selector": selector}})
    return run_experiment(cfg, out)


@pytest.mark.slow
def test_robust_loses_much_less_than_a_uniform_selector_under_40_percent_corruption(tmp_path):
    other_world = make_toy_world(seed=1, name="toy_other")["train"]
    bad = build_toy_pool(tmp_path / "bad", n_models=10, seed=0, untrustworthy_ratio=0.4,
                         deceptive_source=other_world)
    trust = [e.trust for e in bad.entries]
    assert sorted(trust).count("trusted") == 6 and "deceptive" in trust and "poor" in trust
    trusted = subset_pool(bad, [i for i, t in enumerate(trust) if t == "trusted"], tmp_path / "trusted")

    acc: dict[tuple[str, str], float] = {}
    for selector in ("reliability", "uniform"):
        for name, pool in (("bad", bad), ("trusted", trusted)):
            scores = []
            for seed in SEEDS:
                result = _run(pool, selector, seed, tmp_path / f"{selector}-{name}-{seed}")
                scores.append(result["scores"]["5way_1shot"]["mean"])
                if selector == "reliability" and name == "bad":
                    w = result["info"]["reliability_weights"]
                    on_trusted = sum(x for x, t in zip(w, trust) if t == "trusted")
                    assert on_trusted > 0.8, (seed, w)  # uniform would be 0.6
            acc[selector, name] = sum(scores) / len(scores)

    loss_robust = acc["reliability", "trusted"] - acc["reliability", "bad"]
    loss_uniform = acc["uniform", "trusted"] - acc["uniform", "bad"]
    assert loss_uniform > 4.0, acc  # the corruption really hurts (about 10 points)
    assert loss_robust < 0.5 * loss_uniform, acc  # robust loses less than half of that (about 4)
