"""Tests for mocosfl.models: split equivalence, config errors, paper parameter counts, init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.errors import ConfigError
from mocosfl.models import (
    ProjectionHead,
    WSConv2d,
    build_backbone,
    build_split_model,
    conv2d,
    init_xavier_,
    make_norm,
    mobilenetv2_layers,
    parse_bottleneck,
    resnet18_layers,
    resnet50_layers,
    vgg13_layers,
)

# Small widths keep every forward pass cheap; VGG's five max-pools need 32 px input.
SMALL = {"resnet18": 8, "resnet50": 4, "vgg13": 8, "mobilenetv2": 8}
NUM_LAYERS = {"resnet18": 9, "resnet50": 17, "vgg13": 15, "mobilenetv2": 9}
IMAGE = 32


def _cuts(arch: str) -> list[int]:
    last = NUM_LAYERS[arch] - 1
    if arch == "resnet50":
        return [1, 4, 8, last]
    return list(range(1, last + 1))


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference_outputs(images: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    for arch, width in SMALL.items():
        torch.manual_seed(123)
        with torch.no_grad():
            outputs[arch] = build_backbone(arch, width=width, image_size=IMAGE)(images)
    return outputs


@pytest.mark.parametrize(("arch", "cut"), [(arch, cut) for arch in SMALL for cut in _cuts(arch)])
def test_client_then_server_equals_unsplit_backbone(
    arch: str, cut: int, images: torch.Tensor, reference_outputs: dict[str, torch.Tensor]
) -> None:
    torch.manual_seed(123)
    model = build_split_model(arch, cut_layer=cut, width=SMALL[arch], image_size=IMAGE)
    assert model.num_layers == NUM_LAYERS[arch]
    assert model.cut_layer == cut
    with torch.no_grad():
        latent = model.client(images)
        out = model.server(latent)
    assert tuple(latent.shape[1:]) == model.latent_shape
    assert out.shape == (2, model.feature_dim)
    torch.testing.assert_close(out, reference_outputs[arch], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("builder", "width", "n_layers", "feature_dim"),
    [
        (resnet18_layers, 64, 9, 512),
        (resnet50_layers, 64, 17, 2048),
        (vgg13_layers, 64, 15, 512),
        (mobilenetv2_layers, 32, 9, 1280),
    ],
)
def test_builders_layer_count_and_feature_dim(builder, width, n_layers, feature_dim) -> None:
    layers, dim = builder(width=width)
    assert len(layers) == n_layers
    assert dim == feature_dim


def test_same_seed_gives_same_weights() -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_split_model("resnet18", cut_layer=2, width=8, bottleneck="C4S4")
        states.append({**model.client.state_dict(), **model.server.state_dict()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_resnet18_client_param_counts_match_paper() -> None:
    # Table 1 of the MocoSFL paper: MocoSFL-1 and MocoSFL-3 client sizes (GN + WS, width 64).
    assert _n_params(build_split_model("resnet18", cut_layer=1).client) == 1_856
    assert _n_params(build_split_model("resnet18", cut_layer=2).client) == 75_840


@pytest.mark.parametrize("cut", [0, 9, 12, -1])
def test_cut_out_of_range_reports_valid_range(cut: int) -> None:
    with pytest.raises(ConfigError, match=r"valid cut layers are 1\.\.8") as err:
        build_split_model("resnet18", cut_layer=cut, width=4)
    assert f"sfl.cut_layer={cut}" in str(err.value)
    assert "\n" not in str(err.value)


def test_cut_range_depends_on_arch() -> None:
    with pytest.raises(ConfigError, match=r"1\.\.14"):
        build_split_model("vgg13", cut_layer=15, width=4)


def test_unknown_arch_lists_choices() -> None:
    with pytest.raises(ConfigError, match="resnet18, resnet50, vgg13, mobilenetv2"):
        build_split_model("resnet34")
    with pytest.raises(ConfigError, match=r"model\.arch"):
        build_backbone("alexnet")


def test_unknown_norm_lists_choices() -> None:
    with pytest.raises(ConfigError, match="gn, bn"):
        make_norm("ln", 8)
    with pytest.raises(ConfigError, match=r"model\.norm"):
        build_split_model("resnet18", norm="layer", width=4)


@pytest.mark.parametrize("spec", ["C4S3", "C0S2", "C4S1", "c4s2", "C4", "4S2", "C4S2x", ""])
def test_bad_bottleneck_raises(spec: str) -> None:
    with pytest.raises(ConfigError, match="C4S2"):
        build_split_model("resnet18", cut_layer=1, width=4, bottleneck=spec)


def test_parse_bottleneck() -> None:
    assert parse_bottleneck("C4S2") == (4, 2)
    assert parse_bottleneck("C16S8") == (16, 8)


def test_bottleneck_c4s2_at_cut1_shrinks_latent() -> None:
    torch.manual_seed(0)
    model = build_split_model("resnet18", cut_layer=1, width=8, bottleneck="C4S2")
    assert model.latent_shape == (4, 16, 16)
    x = torch.randn(3, 3, IMAGE, IMAGE)
    latent = model.client(x)
    assert latent.shape == (3, 4, 16, 16)
    assert model.server(latent).shape == (3, model.feature_dim)
    # The decoder restores the cut's channels and resolution: encoder/decoder are mirrored.
    convs = [m for m in model.client if isinstance(m, nn.Conv2d) and not isinstance(m, WSConv2d)]
    deconvs = [m for m in model.server if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == len(deconvs) == 1
    assert deconvs[0].out_channels == 8


def test_bottleneck_c4s4_uses_two_steps() -> None:
    model = build_split_model("mobilenetv2", cut_layer=2, width=8, bottleneck="C4S4")
    assert model.latent_shape == (4, 8, 8)
    assert model.server(model.client(torch.randn(2, 3, IMAGE, IMAGE))).shape == (2, 320)


def test_imagenet_size_uses_strided_7x7_stem() -> None:
    model = build_split_model("resnet18", cut_layer=1, width=4, image_size=224)
    assert model.latent_shape == (4, 112, 112)
    assert model.client[0][0].kernel_size == (7, 7)
    cifar = build_split_model("resnet18", cut_layer=1, width=4, image_size=32)
    assert cifar.latent_shape == (4, 32, 32)
    assert cifar.client[0][0].kernel_size == (3, 3)


def test_mobilenet_imagenet_stem_has_stride_2() -> None:
    model = build_split_model("mobilenetv2", cut_layer=1, width=8, image_size=96)
    assert model.latent_shape == (8, 48, 48)


def test_batchnorm_and_plain_conv_options() -> None:
    model = build_split_model("resnet18", cut_layer=2, width=8, norm="bn", weight_std=False)
    modules = list(model.client.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in modules)
    assert not any(isinstance(m, (nn.GroupNorm, WSConv2d)) for m in modules)
    assert model.server(model.client(torch.randn(2, 3, 16, 16))).shape == (2, 64)


def test_group_norm_uses_four_channels_per_group() -> None:
    assert make_norm("gn", 64).num_groups == 16
    assert make_norm("gn", 2).num_groups == 1
    assert isinstance(make_norm("bn", 8), nn.BatchNorm2d)


def test_mobilenet_channels_fit_group_norm() -> None:
    layers, _ = mobilenetv2_layers(width=8)
    for m in nn.ModuleList(layers).modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % 4 == 0


def test_wsconv_equals_conv_with_standardised_weight() -> None:
    torch.manual_seed(0)
    conv = WSConv2d(3, 5, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    w = conv.weight.detach()
    flat = w.reshape(5, -1)
    w_std = (w - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-5)
    torch.testing.assert_close(conv(x), F.conv2d(x, w_std, padding=1))


def test_conv2d_factory() -> None:
    assert isinstance(conv2d(3, 8, 3, weight_std=True), WSConv2d)
    plain = conv2d(3, 8, 3, stride=2, weight_std=False)
    assert type(plain) is nn.Conv2d
    assert plain.bias is None
    assert plain.padding == (1, 1) and plain.stride == (2, 2)


def test_xavier_init_biases() -> None:
    model = build_split_model("resnet18", cut_layer=2, width=8, bottleneck="C4S2")
    backbone_convs = [m for m in model.client[:2].modules() if isinstance(m, nn.Conv2d)]
    assert backbone_convs and all(m.bias is None for m in backbone_convs)
    for m in [*model.client.modules(), *model.server.modules()]:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.GroupNorm):
            assert torch.all(m.weight == 1) and torch.count_nonzero(m.bias) == 0
    head = ProjectionHead(16, 32, 8)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert len(linears) == 2
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)


def test_init_xavier_bounds_weights() -> None:
    lin = init_xavier_(nn.Linear(100, 50))
    bound = (6 / 150) ** 0.5
    assert lin.weight.abs().max() <= bound
    assert lin.weight.std() > bound / 4


def test_projection_head_shapes() -> None:
    head = ProjectionHead(64)
    assert head(torch.randn(3, 64)).shape == (3, 1024)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    with pytest.raises(ConfigError):
        ProjectionHead(0)
