"""The batched MoCo v2 augmentation (mocosfl.data.transforms)."""

from __future__ import annotations

import pytest
import torch

from mocosfl.data import (
    DATASET_STATS,
    MoCoV2Augmentation,
    make_synthetic,
    normalize,
)
from mocosfl.data import transforms as transforms_mod

MEAN, STD = DATASET_STATS["cifar10"]


def _images(n=64, seed=0):
    return make_synthetic("train", train_size=n, seed=seed).images


def test_augmentation_shape_dtype_determinism():
    aug = MoCoV2Augmentation(32, MEAN, STD)
    x = _images()
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    c = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == (64, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert abs(a.mean().item()) < 1.0 and 0.4 < a.std().item() < 1.6
    # image k's views do not depend on the batch it is in
    assert torch.equal(aug(x[:5], torch.Generator().manual_seed(0)), a[:5])
    # the global RNG is neither used nor disturbed
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(1), before)


def test_augmentation_resizes_and_crops_to_output_size():
    aug = MoCoV2Augmentation(16, MEAN, STD)
    out = aug(_images(8), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 16, 16)


def test_augmentation_identity_settings_equal_normalize():
    """Full-image crop, no jitter/gray/blur/flip: the batched pipeline is exactly normalize()."""
    still = dict(min_scale=1.0, ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    aug = MoCoV2Augmentation(32, MEAN, STD, flip_p=0.0, **still)
    x = _images(16)
    out = aug(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, normalize(x, MEAN, STD), atol=1e-5)
    flip = MoCoV2Augmentation(32, MEAN, STD, flip_p=1.0, **still)
    assert torch.allclose(flip(x, torch.Generator()), normalize(x, MEAN, STD).flip(-1), atol=1e-5)


def test_augmentation_ops_match_torchvision():
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(6, 3, 8, 8)
    for hue in (-0.1, 0.04, 0.3):
        ours = transforms_mod._hue(x.clone(), torch.full((6, 1, 1, 1), hue))
        assert torch.allclose(ours, TF.adjust_hue(x, hue), atol=1e-5)
    for f in (0.6, 1.4):
        fac = torch.full((6, 1, 1, 1), f)
        pairs = [
            (transforms_mod._brightness, TF.adjust_brightness),
            (transforms_mod._contrast, TF.adjust_contrast),
            (transforms_mod._saturation, TF.adjust_saturation),
        ]
        for ours, theirs in pairs:
            assert torch.allclose(ours(x.clone(), fac), theirs(x, f), atol=1e-5)
    rt = transforms_mod.hsv_to_rgb(transforms_mod.rgb_to_hsv(x))
    assert torch.allclose(rt, x, atol=1e-5)


def test_augmentation_blur_matrix_matches_reflect_conv():
    aug = MoCoV2Augmentation(32, MEAN, STD, blur="kernel10")
    sigma = torch.tensor([0.5, 1.7])
    left, right = aug._blur_flip_matrices(
        sigma, torch.tensor([True, True]), torch.tensor([False, True]), 32
    )
    x = torch.rand(2, 3, 32, 32)
    y = left.unsqueeze(1) @ x @ right.unsqueeze(1)
    k = aug.blur_kernel_size
    pos = torch.arange(k, dtype=torch.float32) - k // 2
    for i in range(2):
        kern = torch.exp(-(pos**2) / (2 * sigma[i] ** 2))
        kern = kern / kern.sum()
        xp = torch.nn.functional.pad(x[i : i + 1], (k // 2,) * 4, mode="reflect")
        kern2d = (kern[:, None] * kern[None, :]).expand(3, 1, k, k)
        ref = torch.nn.functional.conv2d(xp, kern2d, groups=3)
        if i == 1:
            ref = ref.flip(-1)
        assert torch.allclose(y[i : i + 1], ref, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_gpu_matches_cpu():
    aug = MoCoV2Augmentation(32, MEAN, STD)
    x = _images(64)
    cpu = aug(x, torch.Generator().manual_seed(0))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
