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

import argparse

import pytest

from ..benchmarks.scripts import load_script

SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_robust_loses_much_less_than_a_uniform_selector_under_40_percent_corruption(tmp_path):
    bench = load_script("toy_corruption")  # the benchmark's pools and training settings, fewer seeds and episodes
    args = argparse.Namespace(out=str(tmp_path), steps=200, episodes=300)
    pools = bench.pools(tmp_path / "pools", 0.4, "other")
    trust = [e.trust for e in pools["bad"]]
    assert sorted(trust).count("trusted") == 6 and "deceptive" in trust and "poor" in trust

    acc: dict[tuple[str, str], float] = {}
    for arm in ("robust", "uniform"):
        for name in ("bad", "trusted"):
            scores = []
            for seed in SEEDS:
                result = bench.train(pools[name], arm, seed, args, tmp_path / "runs" / f"{arm}-{name}-{seed}")
                scores.append(result["scores"]["5way_1shot"]["mean"])
                if arm == "robust" and name == "bad":
                    w = result["info"]["reliability_weights"]
                    on_trusted = sum(x for x, t in zip(w, trust) if t == "trusted")
                    assert on_trusted > 0.8, (seed, w)  # uniform would be 0.6
            acc[arm, name] = sum(scores) / len(scores)

    loss_robust = acc["robust", "trusted"] - acc["robust", "bad"]
    loss_uniform = acc["uniform", "trusted"] - acc["uniform", "bad"]
    assert loss_uniform > 4.0, acc  # the corruption really hurts (about 10 points)
    assert loss_robust < 0.5 * loss_uniform, acc  # robust loses less than half of that (about 3)
