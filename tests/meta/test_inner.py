"""The functional inner loop: exact SGD steps, per-step rates, no mutation, gradient flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.meta import functional_forward, inner_update


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.arange(n) % 2


def manual_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lrs: list[float]) -> dict[str, torch.Tensor]:
    """The reference: in-place SGD on a deep copy with ordinary backward()."""
    import copy

    m = copy.deepcopy(model)
    for lr in lrs:
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        with torch.no_grad():
            for p in m.parameters():
                p -= lr * p.grad
    return {k: v.detach() for k, v in m.named_parameters()}


def test_functional_forward_equals_the_module_call() -> None:
    model, (x, _) = mlp(), data()
    params = {k: v * 1 for k, v in model.named_parameters()}
    torch.testing.assert_close(functional_forward(model, params, x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("first_order", [False, True])
def test_inner_update_matches_manual_sgd_with_per_step_rates(first_order: bool) -> None:
    model, (x, y) = mlp(), data()
    lrs = [0.5, 0.1, 0.3]
    fast = inner_update(model, dict(model.named_parameters()), x, y, steps=3, lr=lrs, first_order=first_order)
    expected = manual_sgd(model, x, y, lrs)
    for k in expected:
        torch.testing.assert_close(fast[k], expected[k], rtol=1e-12, atol=1e-12)


def test_a_float_rate_equals_the_same_rate_repeated() -> None:
    model, (x, y) = mlp(), data()
    p = dict(model.named_parameters())
    a = inner_update(model, p, x, y, steps=2, lr=0.2)
    b = inner_update(model, p, x, y, steps=2, lr=torch.tensor([0.2, 0.2], dtype=torch.float64))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_inner_update_mutates_neither_the_model_nor_the_dict() -> None:
    model, (x, y) = mlp(), data()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    keys, ids = list(params), {k: id(v) for k, v in params.items()}
    fast = inner_update(model, params, x, y, steps=2, lr=0.5)
    assert list(params) == keys and all(id(params[k]) == ids[k] for k in keys)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(fast[k] is not params[k] for k in keys)
    assert all(not torch.equal(fast[k], params[k]) for k in keys)


def test_params_not_requiring_grad_are_passed_through_frozen() -> None:
    model, (x, y) = mlp(), data()
    params = {k: (v if k.startswith("2.") else v.detach()) for k, v in model.named_parameters()}
    fast = inner_update(model, params, x, y, steps=2, lr=0.5)
    assert fast["0.weight"] is params["0.weight"] and fast["0.bias"] is params["0.bias"]
    assert not torch.equal(fast["2.weight"], params["2.weight"])


def test_an_unused_parameter_keeps_its_value() -> None:
    model, (x, y) = mlp(), data()
    params = dict(model.named_parameters())
    params["unused"] = torch.ones(2, dtype=torch.float64, requires_grad=True)
    fast = inner_update(model, params, x, y, steps=1, lr=0.5)
    assert fast["unused"] is params["unused"]


def test_zero_steps_return_a_copy_of_the_dict() -> None:
    model, (x, y) = mlp(), data()
    params = dict(model.named_parameters())
    fast = inner_update(model, params, x, y, steps=0, lr=0.5)
    assert fast == params and fast is not params


def test_learnable_per_step_rates_receive_the_first_order_gradient() -> None:
    # With first-order steps, d L(phi_2) / d lr_t = -<g_t, grad L(phi_2)> exactly.
    model, (x, y) = mlp(), data()
    lrs = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    params = dict(model.named_parameters())
    fast = inner_update(model, params, x, y, steps=2, lr=lrs, first_order=True)
    F.cross_entropy(functional_forward(model, fast, x), y).backward()
    # hand computation
    phi = {k: v.detach().requires_grad_() for k, v in params.items()}
    expected = []
    gs = []
    for lr in (0.3, 0.2):
        g = torch.autograd.grad(F.cross_entropy(functional_forward(model, phi, x), y), list(phi.values()))
        gs.append(g)
        phi = {k: (v - lr * gk).detach().requires_grad_() for (k, v), gk in zip(phi.items(), g)}
    final = torch.autograd.grad(F.cross_entropy(functional_forward(model, phi, x), y), list(phi.values()))
    for g in gs:
        expected.append(-sum((a * b).sum() for a, b in zip(g, final)))
    torch.testing.assert_close(lrs.grad, torch.stack(expected), rtol=1e-10, atol=1e-12)


def test_first_order_backpropagates_the_gradient_at_the_adapted_weights_and_second_order_does_not() -> None:
    model, (x, y) = mlp(), data()
    params = dict(model.named_parameters())
    grads = {}
    for first_order in (False, True):
        fast = inner_update(model, params, x, y, steps=2, lr=0.5, first_order=first_order)
        leaves = {k: v.detach().requires_grad_() for k, v in fast.items()}
        at_fast = torch.autograd.grad(F.cross_entropy(functional_forward(model, leaves, x), y), list(leaves.values()))
        grads[first_order] = torch.autograd.grad(
            F.cross_entropy(functional_forward(model, fast, x), y), list(params.values())
        )
    for a, b in zip(grads[True], at_fast):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert max((a - b).abs().max() for a, b in zip(grads[False], at_fast)) > 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": -1, "lr": 0.1}, "steps must be an integer >= 0, got -1"),
        ({"steps": 2, "lr": [0.1, 0.2, 0.3]}, "got 3 per-step learning rates for steps=2"),
        ({"steps": 2, "lr": torch.ones(3)}, r"shape \[steps\]=\[2\], got shape \(3,\)"),
        ({"steps": 1, "lr": float("nan")}, "lr must be finite"),
    ],
)
def test_bad_arguments_raise_with_the_value_and_the_fix(kwargs: dict, match: str) -> None:
    model, (x, y) = mlp(), data()
    with pytest.raises(ValueError, match=match):
        inner_update(model, dict(model.named_parameters()), x, y, **kwargs)


def test_nothing_to_adapt_raises_and_names_the_fix() -> None:
    model, (x, y) = mlp(), data()
    params = {k: v.detach() for k, v in model.named_parameters()}
    with pytest.raises(ValueError, match="no entry of params requires grad"):
        inner_update(model, params, x, y, steps=1, lr=0.1)


def test_a_diverged_fine_tune_raises_once_at_the_end_naming_the_setting_that_controls_it() -> None:
    model, (x, y) = mlp().float(), data()
    x = x.float()
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    square = lambda out, _y: out.pow(2).mean()  # noqa: E731  (each step at lr 1e20 multiplies the bias by ~1e20)
    with pytest.raises(FloatingPointError, match=r"fine-tuning diverged: .*not finite after 3 steps at lr 1e\+20; "
                                                 r"lower eval\.lr \(now 1e\+20\), e\.g\. to 1e\+19"):
        inner_update(model, params, x, y, steps=3, lr=1e20, loss_fn=square, lr_setting="eval.lr")
    fine = inner_update(model, params, x, y, steps=3, lr=0.1, loss_fn=square, lr_setting="eval.lr")
    assert all(torch.isfinite(v).all() for v in fine.values())
    # without a setting nothing is checked (meta-training checks its own losses)
    wild = inner_update(model, params, x, y, steps=3, lr=1e20, loss_fn=square)
    assert not all(torch.isfinite(v).all() for v in wild.values())


def test_check_finetune_names_the_first_weight_that_is_not_finite() -> None:
    from dfml.meta.inner import check_finetune

    good = {"a": torch.ones(2), "b": torch.zeros(3)}
    check_finetune(torch.tensor(1.0), good, lr=0.5, steps=2, lr_setting="eval.val_lr")
    with pytest.raises(FloatingPointError, match=r"the loss is not finite .* lower eval\.val_lr \(now 0\.5\)"):
        check_finetune(torch.tensor(float("inf")), good, lr=0.5, steps=2, lr_setting="eval.val_lr")
    bad = {**good, "b": torch.tensor([0.0, float("nan"), 1.0])}
    with pytest.raises(FloatingPointError, match=r"weights \['b'\] are not finite"):
        check_finetune(torch.tensor(1.0), bad, lr=0.5, steps=2, lr_setting="eval.lr")
