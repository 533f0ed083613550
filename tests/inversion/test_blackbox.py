import pytest
import torch
from torch import Tensor, nn

from dfml.inversion import BlackBoxGradientError, BlackBoxPool, BlackBoxTeacher, QueryBudget, QueryBudgetExceeded
from dfml.inversion.losses import BNStatMatch


class Recorder(nn.Module):
    """A teacher that records, per forward, whether autograd was on and whether its input needed grad."""

    def __init__(self, n_in: int = 4, n_out: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, n_out))
        self.calls: list[tuple[bool, bool, int]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append((torch.is_grad_enabled(), x.requires_grad, x.shape[0]))
        return self.net(x)


def recorder() -> Recorder:
    torch.manual_seed(0)
    return Recorder().eval().requires_grad_(True)  # trainable params: the wrapper must still never touch them


def test_the_teacher_never_sees_autograd_and_backward_through_it_raises():
    model = recorder()
    bb = BlackBoxTeacher(model)
    x = torch.randn(5, 4, requires_grad=True)
    out = bb(x)
    assert model.calls == [(False, False, 5)]
    assert out.requires_grad  # tied to x only so that differentiating through it fails loudly
    with pytest.raises(BlackBoxGradientError, match="cannot differentiate through a black-box teacher"):
        out.sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None


def test_outputs_of_constant_inputs_do_not_require_grad():
    bb = BlackBoxTeacher(recorder())
    out = bb(torch.randn(3, 4))
    assert not out.requires_grad
    with torch.no_grad():
        assert not bb(torch.randn(3, 4, requires_grad=True)).requires_grad


def test_outputs_are_logits_probabilities_or_labels():
    model = recorder()
    x = torch.randn(6, 4)
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(BlackBoxTeacher(model)(x), logits)
    probs = BlackBoxTeacher(model, output="probs")(x)
    assert torch.allclose(probs, logits.softmax(-1)) and torch.allclose(probs.sum(-1), torch.ones(6))
    labels = BlackBoxTeacher(model, output="label")(x)
    assert labels.dtype == torch.int64 and torch.equal(labels, logits.argmax(-1))


def test_internals_are_not_reachable():
    bb = BlackBoxTeacher(recorder())
    assert not isinstance(bb, nn.Module)
    for name in ("parameters", "named_parameters", "state_dict", "modules", "register_forward_hook", "net"):
        with pytest.raises(AttributeError, match="exposes its outputs only"):
            getattr(bb, name)
    with pytest.raises(AttributeError, match="BatchNorm statistics are not reachable"):
        BNStatMatch(bb)  # type: ignore[arg-type]


def test_per_model_budget_is_exact_and_a_crossing_batch_is_refused_whole():
    model = recorder()
    bb = BlackBoxTeacher(model, budget=10, name="model 3")
    bb(torch.randn(4, 4))
    bb(torch.randn(4, 4))
    with pytest.raises(QueryBudgetExceeded, match=r"'model 3 \(per model\)' exceeded: 8 of 10 queries spent") as err:
        bb(torch.randn(4, 4))  # would cross the budget by 2: nothing of it is classified
    assert (err.value.limit, err.value.spent, err.value.requested) == (10, 8, 4)
    assert bb.queries == 8 and bb.remaining == 2 and len(model.calls) == 2
    bb(torch.randn(2, 4))
    assert bb.queries == 10 and bb.remaining == 0 and not bb.can_query(1) and bb.can_query(0)
    with pytest.raises(QueryBudgetExceeded, match="on_budget='stop'"):
        bb(torch.randn(1, 4))
    assert bb.queries == 10 and sum(c[2] for c in model.calls) == 10


def test_a_shared_total_budget_binds_across_wrappers():
    total = QueryBudget(10)
    a = BlackBoxTeacher(recorder(), budget=8, total=total, name="model 0")
    b = BlackBoxTeacher(recorder(), budget=8, total=total, name="model 1")
    a(torch.randn(6, 4))
    with pytest.raises(QueryBudgetExceeded, match="'model 0 \\(per model\\)' exceeded: 6 of 8"):
        a(torch.randn(3, 4))
    b(torch.randn(4, 4))
    assert total.spent == 10 and total.remaining == 0 and (a.queries, b.queries) == (6, 4)
    assert a.remaining == 0 and not a.can_query(1)  # its own 2 are left, the pool's are not
    with pytest.raises(QueryBudgetExceeded, match="'total' exceeded: 10 of 10"):
        b(torch.randn(1, 4))
    assert total.spent == 10 and b.queries == 4  # the refused call charged neither budget


def test_unlimited_budgets_only_count():
    total = QueryBudget(None)
    bb = BlackBoxTeacher(recorder(), total=total)
    bb(torch.randn(7, 4))
    assert bb.queries == 7 and total.spent == 7 and bb.remaining is None and bb.can_query(10**9)


def test_the_number_of_outputs_is_stated_or_probed_with_one_counted_query():
    bb = BlackBoxTeacher(recorder())
    with pytest.raises(ValueError, match="number of outputs is unknown"):
        bb.n_outputs
    assert bb.probe_outputs((4,)) == 3 and bb.queries == 1
    assert bb.probe_outputs((4,)) == 3 and bb.queries == 1  # remembered
    assert BlackBoxTeacher(recorder(), n_outputs=3).n_outputs == 3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="output must be one of"):
        BlackBoxTeacher(recorder(), output="features")
    with pytest.raises(ValueError, match="eval mode"):
        BlackBoxTeacher(recorder().train())
    with pytest.raises(ValueError, match="int >= 0 or None"):
        BlackBoxTeacher(recorder(), budget=-1)
    with pytest.raises(TypeError, match="total must be a QueryBudget"):
        BlackBoxTeacher(recorder(), total=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wraps an nn.Module"):
        BlackBoxTeacher(lambda x: x)  # type: ignore[arg-type]
    bad = BlackBoxTeacher(nn.Identity().eval())
    with pytest.raises(ValueError, match=r"must return logits \[batch=2, classes\]"):
        bad(torch.zeros(2, 3, 4))


def _dual_tangent(bb: BlackBoxTeacher, x: Tensor) -> Tensor | None:
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        return fwAD.unpack_dual(bb(fwAD.make_dual(x, torch.ones_like(x)))).tangent


_ROUTES = {
    "backward": lambda bb, x: bb(x.clone().requires_grad_()).sum().backward(),
    "autograd.grad": lambda bb, x: (lambda xr: torch.autograd.grad(bb(xr).sum(), xr))(x.clone().requires_grad_()),
    "forward_ad": _dual_tangent,
    "func.grad": lambda bb, x: torch.func.grad(lambda v: bb(v).sum())(x),
    "func.vjp": lambda bb, x: torch.func.vjp(bb, x)[1](torch.ones(x.shape[0], 3)),
    "func.jvp": lambda bb, x: torch.func.jvp(lambda v: bb(v).sum(), (x,), (torch.ones_like(x),)),
    "func.jacrev": lambda bb, x: torch.func.jacrev(bb)(x),
    "func.jacfwd": lambda bb, x: torch.func.jacfwd(bb)(x),
    "func.hessian": lambda bb, x: torch.func.hessian(lambda v: bb(v).sum())(x),
}


@pytest.mark.parametrize("output", ["logits", "probs"])
@pytest.mark.parametrize("route", list(_ROUTES))
def test_every_differentiation_route_through_the_teacher_raises(route: str, output: str):
    bb = BlackBoxTeacher(recorder(), output=output)
    with pytest.raises(BlackBoxGradientError, match="cannot differentiate through a black-box teacher"):
        _ROUTES[route](bb, torch.randn(5, 4))


def test_constant_inputs_inside_a_transform_are_answered_and_vmap_is_refused_before_any_query():
    bb = BlackBoxTeacher(recorder())
    x = torch.randn(5, 4)
    expected = x.sum(0)  # the teacher's answer is a constant: only the other term has a gradient
    assert torch.equal(torch.func.grad(lambda v: bb(v.detach()).sum() + v.sum(0) @ v.sum(0) / 2)(x).sum(0),
                       expected * 5)
    spent = bb.queries
    with pytest.raises(TypeError, match="cannot be vmapped.*call it on the whole batch"):
        torch.func.vmap(lambda row: bb(row[None]))(x)  # would classify 5 inputs but count 1
    assert bb.queries == spent


def test_a_pool_says_whether_a_model_can_afford_a_batch_under_both_budgets():
    access = BlackBoxPool(per_model=10, total=15)
    assert access.can_afford(0, 10) and not access.can_afford(0, 11)  # not loaded yet: its whole allowance
    access(recorder(), 0)(torch.randn(8, 4))
    assert access.remaining(0) == 2 and not access.can_afford(0, 3)
    assert access.remaining(1) == 7 and access.can_afford(1, 7) and not access.can_afford(1, 8)  # the total binds
    assert BlackBoxPool().remaining(3) is None and BlackBoxPool().can_afford(3, 10**9)


def test_the_budget_error_names_another_fix_when_stopping_gracefully_is_already_in_use():
    default = str(QueryBudgetExceeded("pool total", 10, 8, 4))
    assert "let the inverter stop gracefully with on_budget='stop'" in default
    other = str(QueryBudgetExceeded("pool total", 10, 8, 4, fix="raise datafree.access.total"))
    assert other.endswith("remain (nothing of this batch was classified). raise datafree.access.total")
    assert "on_budget" not in other
