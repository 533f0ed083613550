from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dfml.models import MLP, Conv4, ResNet10, ResNet12, ResNet18, build_model

SMALL = {
    "conv4": {"hidden": 8},
    "resnet12": {"channels": (4, 6, 8, 10)},
    "resnet10": {"widths": (4, 6, 8, 10)},
    "resnet18": {"widths": (4, 6, 8, 10)},
}


@pytest.mark.parametrize("size", [32, 84])
def test_conv4_shapes_follow_image_size(size: int) -> None:
    model = Conv4(num_classes=5, image_size=size)
    spatial = {32: 2, 84: 5}[size]
    assert model.feature_dim == 32 * spatial * spatial
    assert model.head.in_features == model.feature_dim
    x = torch.randn(3, 3, size, size)
    assert model.encoder(x).shape == (3, model.feature_dim)
    assert model(x).shape == (3, 5)


def test_conv4_default_is_width_32_with_bias_and_four_blocks() -> None:
    model = Conv4()
    names = [n for n, _ in model.named_parameters()]
    assert names[:4] == ["encoder.0.conv.weight", "encoder.0.conv.bias", "encoder.0.bn.weight", "encoder.0.bn.bias"]
    assert names[-2:] == ["head.weight", "head.bias"]
    assert model.encoder[3].conv.weight.shape == (32, 32, 3, 3)


def test_conv4_rejects_too_small_images() -> None:
    with pytest.raises(ValueError, match="image_size >= 16.*got 8"):
        Conv4(image_size=8)


@pytest.mark.parametrize("size", [32, 84])
@pytest.mark.parametrize("cls", [ResNet12, ResNet10, ResNet18])
def test_resnet_shapes(cls: type[nn.Module], size: int) -> None:
    key = cls.__name__.lower()
    model = cls(in_channels=3, num_classes=7, **SMALL[key]).eval()
    x = torch.randn(2, 3, size, size)
    assert model.encoder(x).shape == (2, 10)
    assert model(x).shape == (2, 7)


def test_resnet12_defaults_and_block_layout() -> None:
    model = ResNet12()
    assert model.feature_dim == 640
    assert model.head.in_features == 640
    assert [b.conv1.out_channels for b in list(model.encoder)[:4]] == [64, 160, 320, 640]
    acts = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert acts and all(a.negative_slope == 0.1 for a in acts)


def test_resnet_depths_and_stems() -> None:
    def n_blocks(m: nn.Module) -> int:
        return sum(1 for x in m.modules() if type(x).__name__ == "BasicBlock")

    assert n_blocks(ResNet10()) == 4
    assert n_blocks(ResNet18()) == 8
    small = ResNet18(widths=(4, 6, 8, 10))
    assert small.encoder[0].kernel_size == (3, 3) and small.encoder[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.modules())
    big = ResNet18(widths=(4, 6, 8, 10), small_input=False)
    assert big.encoder[0].kernel_size == (7, 7)
    assert big(torch.randn(2, 3, 84, 84)).shape == (2, 5)


def test_mlp_shapes_and_batch_norm() -> None:
    model = MLP(32, num_classes=4, hidden=[16, 8], batch_norm=True)
    assert model(torch.randn(5, 32)).shape == (5, 4)
    assert model.encoder(torch.randn(5, 32)).shape == (5, 8)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm1d) for m in MLP(32).modules())


def test_mlp_rejects_nonpositive_sizes() -> None:
    with pytest.raises(ValueError, match=r"MLP sizes must be >= 1.*hidden=\[0\]"):
        MLP(4, hidden=[0])


CASES = [
    ("conv4", {"hidden": 8}, (4, 3, 32, 32)),
    ("conv4", {"hidden": 8, "image_size": 84}, (4, 3, 84, 84)),
    ("resnet12", {"channels": (4, 6, 8, 10)}, (4, 3, 32, 32)),
    ("resnet10", {"widths": (4, 6, 8, 10)}, (4, 3, 32, 32)),
    ("resnet18", {"widths": (4, 6, 8, 10)}, (4, 3, 32, 32)),
    ("mlp", {"in_features": 32, "batch_norm": True}, (4, 32)),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("arch", "kwargs", "shape"), CASES)
def test_functional_call_equals_module_call(arch: str, kwargs: dict, shape: tuple, training: bool) -> None:
    model = build_model(arch, **kwargs).train(training)
    x = torch.randn(*shape)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    expected = model(x)
    got = functional_call(model, {**params, **buffers}, (x,))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("arch", "kwargs", "shape"), CASES)
def test_functional_call_with_new_weights_gives_gradients(arch: str, kwargs: dict, shape: tuple) -> None:
    model = build_model(arch, **kwargs)
    params = {k: torch.randn_like(v, requires_grad=True) for k, v in model.named_parameters()}
    out = functional_call(model, params, (torch.randn(*shape),))
    grads = torch.autograd.grad(out.sum(), list(params.values()), allow_unused=False)
    assert len(grads) == len(params)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    torch.testing.assert_close(model(torch.zeros(*shape)), functional_call(model, params, (torch.zeros(*shape),)))


def test_conv4_default_init_is_the_papers_fan_out_normal_and_pytorch_is_kept_as_an_option() -> None:
    import math

    from dfml.models.conv4 import Conv4

    torch.manual_seed(0)
    papers = Conv4(hidden=64)
    std = math.sqrt(2.0 / (3 * 3 * 64))
    for block in papers.encoder[:4]:
        assert abs(float(block.conv.weight.detach().std()) - std) < 0.1 * std
        assert torch.equal(block.bn.weight, torch.ones(64)) and torch.equal(block.bn.bias, torch.zeros(64))
    torch.manual_seed(0)
    default = Conv4(hidden=64, init="pytorch")
    # PyTorch's kaiming_uniform(a=sqrt(5)) gives std 1/sqrt(3 * fan_in), fan_in = 9 * in_channels
    assert abs(float(default.encoder[1].conv.weight.detach().std()) - 1 / math.sqrt(3 * 9 * 64)) < 0.01
    with pytest.raises(ValueError, match="init must be one of"):
        Conv4(init="xavier")
