from __future__ import annotations

import pytest
from torch import nn

from dfml.models import MLP, MODELS, Conv4, ResNet10, ResNet12, ResNet18, build_model, model_arguments


def test_registry_holds_the_five_architectures() -> None:
    assert MODELS.names() == ["conv4", "mlp", "resnet10", "resnet12", "resnet18"]


@pytest.mark.parametrize(
    ("arch", "cls", "kwargs"),
    [
        ("conv4", Conv4, {}),
        ("CONV4", Conv4, {"hidden": 8}),
        ("resnet12", ResNet12, {"channels": [4, 4, 4, 4]}),
        ("resnet10", ResNet10, {"widths": [4, 4, 4, 4]}),
        ("resnet18", ResNet18, {"widths": [4, 4, 4, 4]}),
        ("mlp", MLP, {"in_features": 7, "hidden": [3]}),
    ],
)
def test_build_model_returns_the_registered_class(arch: str, cls: type[nn.Module], kwargs: dict) -> None:
    assert type(build_model(arch, **kwargs)) is cls


def test_unknown_arch_lists_the_valid_names() -> None:
    with pytest.raises(KeyError, match="unknown architecture 'vgg'; valid names: conv4, mlp, resnet10"):
        build_model("vgg")


def test_bad_kwarg_names_the_accepted_arguments() -> None:
    with pytest.raises(TypeError, match=r"'conv4' got unexpected argument\(s\) \['width'\]; it accepts "
                       r"\['in_channels', 'num_classes', 'hidden', 'image_size', 'init'\]"):
        build_model("conv4", width=64)


def test_missing_required_kwarg_is_named() -> None:
    with pytest.raises(TypeError, match=r"'mlp' needs argument\(s\) \['in_features'\]"):
        build_model("mlp")


def test_model_arguments_follow_the_signature() -> None:
    assert model_arguments("mlp") == ["in_features", "num_classes", "hidden", "batch_norm"]
