import pytest
import torch
from torch.func import functional_call, stack_module_state

from dfml.models import GENERATORS, ImageGenerator, VectorGenerator, build_generator
from dfml.models.generator import UpsampledConv2d


@pytest.mark.parametrize("size", [16, 32, 84])
def test_image_generator_makes_images_of_the_requested_size_in_unit_range(size):
    g = ImageGenerator(nz=8, out_channels=3, image_size=size, width=4)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 3, size, size)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_conditional_generators_use_the_label():
    torch.manual_seed(0)
    for g in (ImageGenerator(nz=4, image_size=16, width=4, n_classes=3, norm="instance"),
              VectorGenerator(nz=4, out_features=6, hidden=(8,), n_classes=3, norm="none")):
        z = torch.randn(2, 4)
        a = g(z, torch.tensor([0, 1]))
        b = g(z, torch.tensor([2, 1]))
        assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_norm_layers_carry_no_running_state_so_eval_equals_train(norm):
    g = build_generator((10,), nz=4, width=8, norm=norm)
    z = torch.randn(5, 4)
    out_train = g.train()(z)
    assert all(b is None or b.numel() == 0 for b in g.buffers()) and not list(g.buffers())
    assert torch.equal(out_train, g.eval()(z))


def test_generators_work_with_functional_call_and_vmap_over_stacked_params():
    torch.manual_seed(0)
    gens = [ImageGenerator(nz=4, out_channels=1, image_size=8, width=2, norm="batch") for _ in range(3)]
    params, buffers = stack_module_state(gens)
    z = torch.randn(3, 5, 4)

    def one(p, zz):
        return functional_call(gens[0], p, (zz,))

    batched = torch.vmap(one)(params, z)
    for i, g in enumerate(gens):
        assert torch.allclose(batched[i], g(z[i]), atol=1e-6)


def test_build_generator_picks_by_input_shape_and_registry_lists_both():
    assert isinstance(build_generator((3, 32, 32), width=4), ImageGenerator)
    assert isinstance(build_generator((32,)), VectorGenerator)
    assert GENERATORS.names() == ["image", "vector"]


def test_generator_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="multiple of 4, got 30"):
        ImageGenerator(image_size=30)
    with pytest.raises(ValueError, match=r"norm must be one of .*got 'group'"):
        VectorGenerator(norm="group")
    with pytest.raises(ValueError, match=r"expects noise z \[B, 4\]"):
        VectorGenerator(nz=4)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="needs labels y"):
        VectorGenerator(nz=4, n_classes=2)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="unconditional"):
        VectorGenerator(nz=4)(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"no generator for input shape \(3, 8\)"):
        build_generator((3, 8))


def upsample_then_convolve(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), conv.weight,
                                      conv.bias, padding=1)


@pytest.mark.parametrize("bias", [False, True])
def test_the_phase_convolution_is_a_convolution_of_the_upsampled_input(bias):
    torch.manual_seed(0)
    conv = UpsampledConv2d(3, 4, 3, padding=1, bias=bias).double()
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    got, want = conv(x), upsample_then_convolve(conv, x)
    assert got.shape == (2, 4, 10, 14)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    g = torch.randn_like(got)
    for a, b in zip(torch.autograd.grad(got, [x, *conv.parameters()], g),
                    torch.autograd.grad(want, [x, *conv.parameters()], g)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="3x3 convolution with padding 1, got kernel_size=5"):
        UpsampledConv2d(3, 4, 5, padding=2)


def test_phases_upsampling_is_the_same_generator_to_rounding_under_vmap_too():
    torch.manual_seed(0)
    nearest = ImageGenerator(nz=4, out_channels=3, image_size=12, width=3, n_classes=2).double()
    torch.manual_seed(0)
    phases = ImageGenerator(nz=4, out_channels=3, image_size=12, width=3, n_classes=2, upsample="phases").double()
    state = nearest.state_dict()
    assert list(phases.state_dict()) == list(state)  # same names: checkpoints load into either
    assert all(torch.equal(v, state[k]) for k, v in phases.state_dict().items())  # same initial weights
    z, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1] * 3)
    torch.testing.assert_close(phases(z, y), nearest(z, y), rtol=0, atol=1e-12)
    params, _ = stack_module_state([phases, phases])
    batched = torch.vmap(lambda p, zz: functional_call(phases, p, (zz, y)))(params, torch.stack([z, z]))
    torch.testing.assert_close(batched[1], nearest(z, y), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"upsample must be one of \['nearest', 'phases'\], got 'bilinear'"):
        ImageGenerator(upsample="bilinear")
