import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfml.data.toy import make_toy_world
from dfml.inversion import (
    BlackBoxInversionConfig,
    BlackBoxInverter,
    BlackBoxTeacher,
    Inverter,
    QueryBudget,
    QueryBudgetExceeded,
    zo_gradient,
)
from dfml.inversion.losses import boundary_loss, class_loss
from dfml.inversion.blackbox_inverter import per_sample_loss

# ---------------------------------------------------------------- the estimator


def smooth_loss(w: Tensor, v: Tensor, targets: Tensor):
    """A teacher-like smooth per-row loss: cross-entropy of a tanh network."""

    def f(rows: Tensor, index: Tensor) -> Tensor:
        return F.cross_entropy(torch.tanh(rows @ w) @ v, targets[index], reduction="none")

    return f


def problem(seed: int = 0, b: int = 4, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, 8, generator=g, dtype=torch.float64) / d**0.5
    v = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    targets = torch.arange(b) % 3
    f = smooth_loss(w, v, targets)
    xg = x.clone().requires_grad_(True)
    f(xg, torch.arange(b)).sum().backward()
    return f, x, xg.grad


def cosines(est: Tensor, true: Tensor) -> Tensor:
    return F.cosine_similarity(est.flatten(1), true.flatten(1), dim=1)


@pytest.mark.parametrize("directions", ["sphere", "gaussian"])
def test_estimate_points_along_the_true_gradient_for_many_directions(directions):
    f, x, true = problem()
    est, f0 = zo_gradient(f, x, torch.Generator().manual_seed(1), q=4000, mu=1e-4, directions=directions)
    assert torch.allclose(f0, f(x, torch.arange(4)))
    assert cosines(est, true).min() > 0.97
    assert ((est - true).norm(dim=1) / true.norm(dim=1)).max() < 0.15


def test_estimation_error_shrinks_as_directions_grow():
    f, x, true = problem(b=32)
    errors = []
    for q in (4, 64, 1024):
        est, _ = zo_gradient(f, x, torch.Generator().manual_seed(2), q=q, mu=1e-4)
        errors.append(((est - true).norm(dim=1) / true.norm(dim=1)).mean().item())
    assert errors[0] > 2 * errors[1] > 4 * errors[2]  # roughly sqrt(d / q): 2, 0.5, 0.12
    assert errors[2] < 0.2


def test_the_estimate_has_no_bias_on_a_quadratic_even_with_a_large_radius():
    # f(x) = 1/2 x^T A x + c^T x: the curvature term of a forward difference is odd in u
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a, c = m @ m.T, torch.randn(6, generator=g, dtype=torch.float64)
    x = torch.randn(1, 6, generator=g, dtype=torch.float64)
    est, _ = zo_gradient(lambda r, i: 0.5 * ((r @ a) * r).sum(1) + r @ c, x, g, q=200_000, mu=1.0)
    true = x @ a + c
    assert (est - true).norm() / true.norm() < 0.03


@pytest.mark.parametrize("directions", ["sphere", "gaussian"])
def test_tiled_directions_estimate_the_gradient_projected_onto_tile_means(directions):
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) + 0.5
    x = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    f = lambda rows, index: (w[index] * rows ** 2).flatten(1).sum(1)  # noqa: E731
    true = 2 * w * x
    projected = F.avg_pool2d(true, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)  # 12-dim subspace
    est, _ = zo_gradient(f, x, torch.Generator().manual_seed(1), q=6000, mu=1e-5, directions=directions, block=4)
    assert ((est - projected).flatten(1).norm(dim=1) / projected.flatten(1).norm(dim=1)).max() < 0.1
    tiles = est.unfold(2, 4, 4).unfold(3, 4, 4)  # constant within every tile
    assert torch.allclose(tiles, tiles[..., :1, :1].expand_as(tiles))
    # a smooth gradient (as natural images have): 12 queries in the 12-dim tile space find it, 12
    # queries among all 192 pixels do not
    smooth = torch.randn(3, 3, 2, 2, generator=g, dtype=torch.float64).repeat_interleave(4, 2).repeat_interleave(4, 3)
    f2 = lambda rows, index: (rows ** 2).flatten(1).sum(1)  # noqa: E731
    few, _ = zo_gradient(f2, smooth, torch.Generator().manual_seed(2), q=12, mu=1e-5, directions=directions, block=4)
    full, _ = zo_gradient(f2, smooth, torch.Generator().manual_seed(2), q=12, mu=1e-5, directions=directions)
    assert cosines(few, 2 * smooth).mean() > 2 * cosines(full, 2 * smooth).mean()  # about sqrt(12/12) vs sqrt(12/192)
    with pytest.raises(ValueError, match="divisible"):
        zo_gradient(f, x, g, q=2, block=3)
    with pytest.raises(ValueError, match="block must be"):
        zo_gradient(f, x, g, q=2, block=0)


def test_one_batched_call_of_exactly_b_times_q_plus_one_rows():
    f, x, _ = problem()
    calls: list[tuple[int, list[int]]] = []

    def counted(rows: Tensor, index: Tensor) -> Tensor:
        calls.append((rows.shape[0], index.tolist()))
        return f(rows, index)

    zo_gradient(counted, x, torch.Generator(), q=3)
    assert calls == [(4 * 4, [0, 1, 2, 3] + [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])]
    teacher = BlackBoxTeacher(nn.Linear(16, 3).double().eval())
    zo_gradient(lambda r, i: teacher(r).sum(1), x, torch.Generator(), q=5)
    assert teacher.queries == 4 * (5 + 1)


def test_same_seed_same_estimate_other_seed_other_estimate():
    f, x, _ = problem()
    a, _ = zo_gradient(f, x, torch.Generator().manual_seed(3), q=8)
    b, _ = zo_gradient(f, x, torch.Generator().manual_seed(3), q=8)
    c, _ = zo_gradient(f, x, torch.Generator().manual_seed(4), q=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_estimator_refuses_bad_arguments_and_bad_losses():
    f, x, _ = problem()
    g = torch.Generator()
    with pytest.raises(ValueError, match="q must be an int >= 1"):
        zo_gradient(f, x, g, q=0)
    with pytest.raises(ValueError, match="mu must be > 0"):
        zo_gradient(f, x, g, mu=0.0)
    with pytest.raises(ValueError, match="directions must be one of"):
        zo_gradient(f, x, g, directions="cube")
    with pytest.raises(ValueError, match=r"one loss per row, shape \[12\]"):
        zo_gradient(lambda r, i: r.sum(), x, g, q=2)
    with pytest.raises(FloatingPointError, match="not finite"):
        zo_gradient(lambda r, i: r.sum(1) / 0.0, x, g, q=2)


def test_per_sample_loss_averages_to_the_audited_losses():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    s[:4] = t[:4] * 2  # some rows agree
    y = torch.arange(8) % 5
    got = per_sample_loss(t, y, student_logits=s, boundary_weight=0.5, temperature=2.0)
    want = class_loss(t / 2.0, y) + 0.5 * boundary_loss(s, t, 2.0)
    assert got.mean().item() == pytest.approx(want.item(), rel=1e-6)
    p = per_sample_loss(t.softmax(-1), y, probs=True)
    assert torch.allclose(p, F.cross_entropy(t, y, reduction="none"), atol=1e-5)


# ---------------------------------------------------------------- the inverter


@pytest.fixture(scope="module")
def teacher():
    """An MLP trained on 5 toy classes (a stand-in for a pool model)."""
    ds = make_toy_world()["train"].subset_classes([0, 1, 2, 3, 4])
    x, y = ds.get_batch(range(len(ds))), torch.as_tensor(ds.labels)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the one-thread autouse fixture
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 5))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(60):  # 100% training accuracy
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


def inverter(**overrides) -> BlackBoxInverter:
    cfg = BlackBoxInversionConfig(**{"steps": 10, "q": 5, "lr": 1e-2, "mu": 1e-2, **overrides})
    return BlackBoxInverter((32,), cfg)


def accuracy(model: nn.Module, task) -> float:
    x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
    return (model(x).argmax(1) == y).float().mean().item()


def test_recovered_inputs_are_classified_as_their_targets_within_the_budget(teacher):
    # 5 classes x 4 images = 20; 10 steps x 20 x (5 + 1) = 1200 queries, + 20 to score the last update
    bb = BlackBoxTeacher(teacher, budget=1500, n_outputs=5)
    inv = inverter()
    assert isinstance(inv, Inverter)
    task = inv.invert(bb, 2, 2, torch.Generator().manual_seed(0), model_id=3, classes=(7, 8, 9, 10, 11))
    assert accuracy(teacher, task) >= 0.8  # measured 0.95
    assert bb.queries == inv.cost.teacher_queries == 1220 <= 1500
    assert task.support_x.shape == (10, 32) and task.query_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    src = task.source
    assert src.model_id == 3 and src.classes == (7, 8, 9, 10, 11) and src.kind == "black-box"
    assert src.extra["teacher_accuracy"] == pytest.approx(accuracy(teacher, task))
    assert src.extra["teacher_queries"] == 1220 and not src.extra["budget_exhausted"]
    assert inv.cost.steps == 10 and inv.cost.images == 20 and inv.cost.seconds > 0
    untrained = inverter(steps=1, lr=1e-9).invert(teacher, 2, 2, torch.Generator().manual_seed(0))
    assert accuracy(teacher, untrained) <= 0.4  # the generator before optimisation


def test_the_probe_for_the_number_of_classes_is_charged_to_the_task(teacher):
    bb = BlackBoxTeacher(teacher)  # n_outputs unknown: one probe query
    inv = inverter(steps=2)
    task = inv.invert(bb, 1, 1, torch.Generator())
    assert bb.queries == inv.cost.teacher_queries == task.source.extra["teacher_queries"] == 1 + 2 * 10 * 6 + 10


def test_probability_outputs_work_too_and_labels_alone_are_refused(teacher):
    task = inverter().invert(BlackBoxTeacher(teacher, output="probs"), 2, 2, torch.Generator().manual_seed(0))
    assert accuracy(teacher, task) >= 0.8
    with pytest.raises(ValueError, match="needs scores"):
        inverter().invert(BlackBoxTeacher(teacher, output="label"), 2, 2, torch.Generator())


def test_the_inverter_never_asks_the_teacher_for_a_gradient(teacher):
    calls: list[tuple[bool, bool]] = []
    spy = nn.Sequential(*teacher).requires_grad_(True)  # same weights, trainable flags on
    handle = spy[0].register_forward_pre_hook(lambda m, i: calls.append((torch.is_grad_enabled(), i[0].requires_grad)))
    student = nn.Linear(32, 5)
    try:
        inverter(steps=3, boundary_weight=1.0).invert(spy.eval(), 1, 1, torch.Generator(), student=student)
    finally:
        handle.remove()
        teacher.requires_grad_(False)
    assert len(calls) == 1 + 3 + 1 and set(calls) == {(False, False)}  # probe, 3 steps, final scoring
    assert all(p.grad is None for p in [*teacher.parameters(), *student.parameters()])


def test_same_seed_same_task_other_seed_other_task(teacher):
    a = inverter(steps=3).invert(teacher, 1, 1, torch.Generator().manual_seed(5))
    b = inverter(steps=3).invert(teacher, 1, 1, torch.Generator().manual_seed(5))
    c = inverter(steps=3).invert(teacher, 1, 1, torch.Generator().manual_seed(6))
    assert torch.equal(a.support_x, b.support_x) and not torch.equal(a.support_x, c.support_x)
    inv = inverter(steps=3)  # the generator is reset before every task
    assert torch.equal(inv.invert(teacher, 1, 1, torch.Generator().manual_seed(5)).query_x, a.query_x)
    assert torch.equal(inv.invert(teacher, 1, 1, torch.Generator().manual_seed(5)).query_x, a.query_x)


def test_graceful_stop_returns_the_best_so_far_without_crossing_the_budget(teacher):
    # a step costs 20 x 6 = 120: 3 steps (360) fit in 400, a 4th does not; scoring the last update (20) does
    bb = BlackBoxTeacher(teacher, budget=400, n_outputs=5)
    task = inverter(on_budget="stop").invert(bb, 2, 2, torch.Generator().manual_seed(0))
    extra = task.source.extra
    assert extra["budget_exhausted"] and extra["steps"] == 3 and extra["final_scored"]
    assert bb.queries == extra["teacher_queries"] == 380 <= 400
    tight = BlackBoxTeacher(teacher, budget=365, n_outputs=5)  # 3 steps fit, the final scoring does not
    extra = inverter(on_budget="stop").invert(tight, 2, 2, torch.Generator()).source.extra
    assert tight.queries == 360 and extra["steps"] == 3 and not extra["final_scored"]


def test_raise_mode_stops_with_the_budget_error_and_charges_nothing_more(teacher):
    bb = BlackBoxTeacher(teacher, budget=400, n_outputs=5, name="model 2")
    with pytest.raises(QueryBudgetExceeded, match=r"'model 2 \(per model\)' exceeded: 360 of 400"):
        inverter().invert(bb, 2, 2, torch.Generator())
    assert bb.queries == 360


def test_a_total_budget_over_several_teachers_stops_the_later_ones(teacher):
    total = QueryBudget(1000)
    inv = inverter(on_budget="stop")
    first = inv.invert(BlackBoxTeacher(teacher, total=total, n_outputs=5), 2, 2, torch.Generator())
    assert first.source.extra["steps"] == 8 and total.spent == 8 * 120 + 20  # 980
    with pytest.raises(QueryBudgetExceeded, match="'total' exceeded: 980 of 1000") as err:  # not even one step fits
        inv.invert(BlackBoxTeacher(teacher, total=total, n_outputs=5), 2, 2, torch.Generator())
    assert total.spent == 980 and inv.cost.teacher_queries == 980
    assert "not even the first step of this task fits" in str(err.value)
    assert "stop gracefully" not in str(err.value)  # it already does: the message names another fix


def test_a_reserve_is_left_unspent_for_the_callers_later_queries(teacher):
    # a step costs 120 and the final scoring 20; a reserve of 20 still lets 3 steps and the scoring fit 400
    bb = BlackBoxTeacher(teacher, budget=400, n_outputs=5)
    extra = inverter(on_budget="stop").invert(bb, 2, 2, torch.Generator(), reserve=20).source.extra
    assert (extra["steps"], extra["final_scored"], bb.queries, bb.remaining) == (3, True, 380, 20)
    bb = BlackBoxTeacher(teacher, budget=400, n_outputs=5)  # a reserve of 50: a third step would leave 40
    extra = inverter(on_budget="stop").invert(bb, 2, 2, torch.Generator(), reserve=50).source.extra
    assert (extra["steps"], extra["final_scored"], bb.queries) == (2, True, 260)
    bb = BlackBoxTeacher(teacher, budget=140, n_outputs=5)  # the first step fits, not with the reserve
    with pytest.raises(QueryBudgetExceeded, match="not even the first step of this task fits"):
        inverter(on_budget="stop").invert(bb, 2, 2, torch.Generator(), reserve=21)
    assert bb.queries == 0


def test_the_fewest_queries_a_task_costs_is_a_probe_one_step_and_the_reserve():
    inv = inverter(on_budget="stop")
    assert inv.task_queries(5, 2, 2) == 1 + 5 * 4 * 6
    assert inv.task_queries(5, 2, 2, reserve=20) == 1 + 120 + 20
    assert inverter().task_queries(5, 2, 2) is None  # on_budget='raise' plans nothing: a step that does not fit raises


def test_a_conditional_generator_receives_the_target_labels(teacher):
    inv = inverter(steps=2, conditional=True)
    seen: list[Tensor] = []
    inv.make_generator = _spy(inv.make_generator, seen)
    task = inv.invert(teacher, 1, 1, torch.Generator())
    assert inv.last_generator.n_classes == 5 and seen[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert task.support_x.shape == (5, 32)


def _spy(make, seen):
    def build(n_way, rng):
        gen = make(n_way, rng)
        gen.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
        return gen

    return build


def test_any_noise_to_input_module_can_replace_the_generator(teacher):
    inv = inverter(steps=2, nz=4)
    inv.make_generator = lambda n_way, rng: nn.Linear(4, 32)
    assert inv.invert(teacher, 1, 1, torch.Generator()).query_x.shape == (5, 32)
    assert isinstance(inv.last_generator, nn.Linear)


def test_bad_configs_requests_and_generators_are_refused(teacher):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        BlackBoxInversionConfig(steps=0)
    with pytest.raises(ValueError, match="on_budget must be 'raise' or 'stop'"):
        BlackBoxInversionConfig(on_budget="ignore")
    with pytest.raises(ValueError, match="directions must be one of"):
        BlackBoxInversionConfig(directions="cube")
    with pytest.raises(ValueError, match="mu, lr and temperature must be > 0"):
        BlackBoxInversionConfig(mu=0.0)
    with pytest.raises(ValueError, match="need nz >= 1 and norm in"):
        BlackBoxInversionConfig(norm="group")
    with pytest.raises(ValueError, match="need n_shot >= 1"):
        inverter().invert(teacher, 0, 1, torch.Generator())
    bb = BlackBoxTeacher(teacher)
    with pytest.raises(ValueError, match="name 2 classes but the teacher has 5 outputs"):
        inverter(steps=1).invert(bb, 1, 1, torch.Generator(), classes=(3, 4))
    assert bb.queries == 1  # only the probe, before any optimisation
    wrong = inverter(nz=4)
    wrong.make_generator = lambda n_way, rng: nn.Linear(4, 8)
    with pytest.raises(ValueError, match=r"inputs of shape \(8,\), expected \(32,\)"):
        wrong.invert(BlackBoxTeacher(teacher, n_outputs=5), 1, 1, torch.Generator())


def test_images_from_the_default_image_generator_with_a_conv_teacher():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()
    inv = BlackBoxInverter((3, 8, 8), BlackBoxInversionConfig(steps=2, q=3, width=4))
    bb = BlackBoxTeacher(conv, n_outputs=3)
    task = inv.invert(bb, 1, 1, torch.Generator())
    assert task.support_x.shape == (3, 3, 8, 8) and 0 <= task.support_x.min() and task.support_x.max() <= 1
    assert bb.queries == 2 * 6 * 4 + 6


def test_normalised_images_are_what_the_teacher_sees_and_what_the_task_holds():
    torch.manual_seed(0)
    seen = []
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()
    conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    inv = BlackBoxInverter((3, 8, 8), BlackBoxInversionConfig(steps=2, q=3, width=4, mean=mean, std=std))
    task = inv.invert(BlackBoxTeacher(conv, n_outputs=3), 1, 1, torch.Generator())
    raw = task.support_x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert -1e-5 <= raw.min() and raw.max() <= 1 + 1e-5  # generator [0, 1] images, normalised
    assert task.support_x.min() < 0  # (0 - 0.5) / 0.25 and the like: not the raw range
    rows = torch.cat(seen)
    assert any(torch.allclose(task.support_x[0], r, atol=1e-6) for r in rows)  # the teacher saw these inputs
    with pytest.raises(ValueError, match="both mean and std"):
        BlackBoxInversionConfig(mean=(0.5,))
    with pytest.raises(ValueError, match="one value per channel"):
        BlackBoxInverter((3, 8, 8), BlackBoxInversionConfig(steps=1, q=1, width=4, mean=(0.5,), std=(0.2,))).invert(
            BlackBoxTeacher(conv, n_outputs=3), 1, 1, torch.Generator())


@pytest.mark.gpu
def test_inversion_on_a_cuda_teacher_keeps_the_inputs_on_the_inverters_device(teacher):
    cuda_teacher = copy.deepcopy(teacher).to("cuda")
    bb = BlackBoxTeacher(cuda_teacher, budget=1500, n_outputs=5)
    inv = BlackBoxInverter((32,), BlackBoxInversionConfig(steps=10, q=5, lr=1e-2), device="cuda")
    task = inv.invert(bb, 2, 2, torch.Generator().manual_seed(0))
    assert task.support_x.device.type == "cuda" and bb.queries == 1220
    assert accuracy(cuda_teacher, task) >= 0.8 and inv.cost.seconds > 0
