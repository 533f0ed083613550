"""Input domains: carrying images between resolutions and normalisations, exactly and differentiably."""

import pytest
import torch

from dfml.data import InputDomain, convert_inputs, convert_task
from dfml.types import Task, TaskSource

A = InputDomain((3, 4, 4), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
B = InputDomain((3, 2, 2), mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 2.0))


def test_equal_domains_leave_inputs_untouched():
    x = torch.randn(2, 3, 4, 4)
    assert convert_inputs(x, A, InputDomain((3, 4, 4), [0.5] * 3, [0.25] * 3)) is x


def test_a_constant_image_keeps_its_pixels_across_resolution_and_normalisation():
    # pixel value p in [0, 1] is (p - 0.5) / 0.25 in A and (p - mean_c) / std_c in B
    p = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1)
    x = ((p - 0.5) / 0.25).expand(1, 3, 4, 4)
    out = convert_inputs(x, A, B)
    want = torch.tensor([(0.2 - 0.0) / 1.0, (0.6 - 0.5) / 0.5, (0.9 - 1.0) / 2.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert out.shape == (1, 3, 2, 2)
    torch.testing.assert_close(out, want)


def test_shrinking_filters_with_the_antialiasing_triangle():
    # A 2x shrink of 1-D [0, 1, 2, 3]: output 0 sits at input 1.0, the triangle of radius 2 weighs
    # inputs 0, 1, 2 by 0.75, 0.75, 0.25 (normalised by 1.75): lo = 1.25 / 1.75; output 1: hi = 4 / 1.75.
    # The image 4 * row + col is separable, so the 2x2 result is 4 * (row filter) + (col filter).
    x = torch.arange(16.0).view(1, 1, 4, 4)
    small = convert_inputs(x, InputDomain((1, 4, 4)), InputDomain((1, 2, 2)))
    lo, hi = 1.25 / 1.75, 4 / 1.75
    torch.testing.assert_close(small, torch.tensor([[[[5 * lo, 4 * lo + hi], [4 * hi + lo, 5 * hi]]]]))
    assert small.mean().item() == pytest.approx(x.mean().item())


def test_conversion_is_differentiable():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    a = InputDomain((3, 4, 4), (0.5,) * 3, (0.25,) * 3)
    b = InputDomain((3, 3, 3), (0.4,) * 3, (0.2,) * 3)
    assert torch.autograd.gradcheck(lambda t: convert_inputs(t, a, b), (x,))


def test_a_task_is_converted_with_its_provenance():
    t = Task(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), torch.zeros(4, 3, 4, 4), torch.tensor([0, 0, 1, 1]),
             TaskSource(model_id=3, classes=(7, 9), extra={"dataset": "a"}))
    out = convert_task(t, A, B)
    assert out.support_x.shape == (2, 3, 2, 2) and out.query_x.shape == (4, 3, 2, 2)
    assert out.source.extra["input_domain"]["shape"] == [3, 4, 4] and out.source.extra["dataset"] == "a"
    assert convert_task(t, A, A) is t


@pytest.mark.parametrize(("src", "dst", "message"), [
    (InputDomain((8,)), InputDomain((4,)), "only images can be resized"),
    (InputDomain((3, 4, 4)), InputDomain((1, 4, 4)), "cannot convert 3-channel images to 1 channels"),
])
def test_impossible_conversions_are_refused(src, dst, message):
    with pytest.raises(ValueError, match=message):
        convert_inputs(torch.zeros(1, *src.shape), src, dst)


def test_inputs_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"inputs have shape \(3, 2, 2\) but the source domain is \(3, 4, 4\)"):
        convert_inputs(torch.zeros(1, 3, 2, 2), A, B)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shape": (3, 0, 4)}, "positive sizes"),
    ({"shape": (3, 4, 4), "mean": (0.5,) * 3}, "give both mean and std or neither"),
    ({"shape": (3, 4, 4), "mean": (0.5,) * 2, "std": (0.2,) * 2}, "one value per channel"),
    ({"shape": (8,), "mean": (0.5,), "std": (0.2,)}, "feature vectors"),
    ({"shape": (1, 4, 4), "mean": (0.5,), "std": (0.0,)}, "std must be positive"),
])
def test_bad_domains_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InputDomain(**kwargs)
