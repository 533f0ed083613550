"""Baseline model builders: exact parameter averages, clear mismatch errors, seeded initialisation."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

from dfml.meta import average_models, random_init_model


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def filled(value: float) -> nn.Module:
    m = net()
    with torch.no_grad():
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.fill_(value)
            else:
                t.fill_(int(value))
    return m


def test_average_models_is_the_exact_mean_of_every_float_entry() -> None:
    models = [filled(1.0), filled(2.0), filled(6.0)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    avg = average_models(models)
    state = avg.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            assert int(value) == 1  # integer buffers come from models[0]
        else:
            assert torch.equal(value, torch.full_like(value, 3.0)), key
    assert torch.equal(state["1.running_var"], torch.full((3,), 3.0))
    for m, b in zip(models, before):  # inputs untouched, result shares no storage
        for k, v in m.state_dict().items():
            assert torch.equal(v, b[k])
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(avg.parameters(), models[0].parameters()))


def test_average_of_random_models_equals_the_stacked_mean_to_float_rounding() -> None:
    models = [random_init_model(net, seed) for seed in range(40)]
    avg = average_models(models)
    for key, value in avg.named_parameters():
        stacked = torch.stack([dict(m.named_parameters())[key] for m in models])
        torch.testing.assert_close(value, stacked.mean(0))  # what average_models computed before it streamed
        assert torch.equal(value, stacked.double().mean(0).float())  # the float64 mean, rounded once


def test_average_models_consumes_a_generator_one_model_at_a_time() -> None:
    alive, most = [0], [0]

    def dropped() -> None:
        alive[0] -= 1

    def lazily(n: int):
        for seed in range(n):
            m = random_init_model(net, seed)
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            weakref.finalize(m, dropped)
            yield m
            del m

    avg = average_models(lazily(30))
    expected = average_models([random_init_model(net, seed) for seed in range(30)])
    assert most[0] <= 3  # the first model (the result's template), the one being added, the next
    for (k, a), b in zip(avg.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(a, b), k


def test_averaging_different_classes_names_both() -> None:
    with pytest.raises(ValueError, match=r"models\[0\] is Linear, models\[1\] is Conv1d"):
        average_models([nn.Linear(2, 2), nn.Conv1d(2, 2, 1)])


def test_averaging_different_shapes_names_the_first_differing_key() -> None:
    with pytest.raises(ValueError, match=r"'weight' is \(3, 2\) torch.float32 in models\[0\] but \(4, 2\)"):
        average_models([nn.Linear(2, 3), nn.Linear(2, 4)])


def test_averaging_different_keys_names_the_missing_key() -> None:
    a, b = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"key '1.weight' is in models\[1\] but not models\[0\]"):
        average_models([a, b])


def test_averaging_nothing_raises() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        average_models([])


def test_random_init_is_deterministic_per_seed_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = random_init_model(net, 7), random_init_model(net, 7), random_init_model(net, 8)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (k, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), k
    assert not torch.equal(a[0].weight, c[0].weight)


def test_random_init_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="seed must be an int, got str"):
        random_init_model(net, "7")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="build\\(\\) must return an nn.Module, got int"):
        random_init_model(lambda: 3, 0)  # type: ignore[arg-type,return-value]
