"""Batched augmentations: contracts checked over the whole registry, and each transform against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lossbench.augment import AUGMENTATIONS, Augmentation, AugmentationPipeline
from lossbench.errors import ConfigError

# The parameters that make each augmentation do nothing. Every registered augmentation must appear here, so a new
# one is tested the moment it is registered.
ZERO_STRENGTH: dict[str, dict] = {
    "none": {},
    "hflip": {"p": 0.0},
    "vflip": {"p": 0.0},
    "crop": {"padding": 0},
    "translate": {"max_pixels": 0.0},
    "rotate": {"degrees": 0.0},
    "scale": {"zoom": [1.0, 1.0]},
    "cutout": {"size": 0},
    "color_jitter": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0},
    "gaussian_noise": {"sigma": 0.0},
    "mixup": {"alpha": 0.0},
    "cutmix": {"alpha": 0.0},
    "trivial_augment": {"p": 0.0},
    "rand_augment": {"p": 0.0},
}
# Non-default strengths where the default is too weak to show in a small test image.
STRONG: dict[str, dict] = {"crop": {"padding": 2}, "cutout": {"size": 4}, "rotate": {"degrees": 30.0}}
NAMES = AUGMENTATIONS.names()
BATCH, CLASSES = 8, 5


def build(name: str, params: dict | None = None) -> Augmentation:
    return AUGMENTATIONS.build(name, STRONG.get(name, {}) if params is None else params)


def images(batch: int = BATCH, channels: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def targets(aug: Augmentation, batch: int = BATCH) -> torch.Tensor:
    labels = torch.arange(batch) % CLASSES
    return F.one_hot(labels, CLASSES).float() if aug.soft_targets else labels


def run(aug: Augmentation, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    params = aug.draw(x.shape[0], np.random.default_rng(seed))
    return aug.apply(x, y, torch.from_numpy(params))


def test_every_augmentation_has_a_zero_strength() -> None:
    assert set(ZERO_STRENGTH) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_draw_contract(name: str) -> None:
    aug = build(name)
    params = aug.draw(10, np.random.default_rng(0))
    assert params.shape == (10, aug.num_params) and params.dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_keeps_shape_and_dtype(name: str) -> None:
    aug = build(name)
    x, y = images(), targets(build(name))
    out, out_y = run(aug, x, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out_y.shape == y.shape and out_y.dtype == y.dtype
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_identity_at_zero_strength(name: str) -> None:
    aug = build(name, ZERO_STRENGTH[name])
    x = images()
    y = targets(aug)
    out, out_y = run(aug, x, y)
    assert torch.equal(out, x) and torch.equal(out_y, y)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "none" and not AUGMENTATIONS.get(n).soft_targets])
def test_differs_between_samples_of_one_batch(name: str) -> None:
    # Every sample is the same image: any difference comes from per-sample randomness.
    aug = build(name)
    x = images(batch=1).expand(BATCH, -1, -1, -1).contiguous()
    out, _ = run(aug, x, targets(aug))
    assert any(not torch.equal(out[0], out[i]) for i in range(1, BATCH))


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_label_mixing_weights_differ_between_samples(name: str) -> None:
    aug = build(name)
    _, y = run(aug, images(), targets(aug))
    own = y[torch.arange(BATCH), torch.arange(BATCH) % CLASSES]
    assert len(set(own.tolist())) > 1


@pytest.mark.parametrize("name", [n for n in NAMES if n != "none"])
def test_reproducible_for_a_seed(name: str) -> None:
    aug = build(name)
    x, y = images(), targets(aug)
    first, second, other = run(aug, x, y, seed=3), run(aug, x, y, seed=3), run(aug, x, y, seed=4)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not (torch.equal(first[0], other[0]) and torch.equal(first[1], other[1]))


def test_range_checks_become_config_errors() -> None:
    for name, params in [("hflip", {"p": 1.5}), ("rotate", {"degrees": -1}), ("scale", {"zoom": [1.2, 1.1]}),
                         ("cutout", {"size": -2}), ("mixup", {"alpha": -0.1}), ("rand_augment", {"magnitude": 31})]:
        with pytest.raises(ConfigError):
            AUGMENTATIONS.build(name, params)


# ---------------------------------------------------------------------------------------------------------------
# Each transform against an independent computation, with parameters set by hand.


def test_flips_follow_their_parameter() -> None:
    x = images(batch=4)
    params = torch.tensor([[0.1], [0.9], [0.3], [0.7]])
    hx, _ = build("hflip").apply(x, torch.zeros(4), params)
    vx, _ = build("vflip").apply(x, torch.zeros(4), params)
    for i, flipped in enumerate([True, False, True, False]):
        assert torch.equal(hx[i], x[i].flip(-1) if flipped else x[i])
        assert torch.equal(vx[i], x[i].flip(-2) if flipped else x[i])


def test_crop_is_a_window_of_the_padded_image() -> None:
    x = images(batch=2, size=6)
    params = torch.tensor([[0.0, 0.99], [0.5, 0.25]])  # offsets (dy, dx) = (0, 4) and (2, 1) with padding 2
    out, _ = build("crop", {"padding": 2}).apply(x, torch.zeros(2), params)
    padded = F.pad(x, (2, 2, 2, 2))
    assert torch.equal(out[0], padded[0, :, 0:6, 4:10])
    assert torch.equal(out[1], padded[1, :, 2:8, 1:7])


def test_translate_by_whole_pixels_moves_the_content() -> None:
    x = images(batch=1, size=10)
    out, _ = build("translate").apply(x, torch.zeros(1), torch.tensor([[2.0, -1.0]]))
    expected = torch.zeros_like(x)
    expected[..., 0:9, 2:10] = x[..., 1:10, 0:8]  # right by 2, up by 1; the uncovered band is zero
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_rotate_by_90_degrees_is_rot90() -> None:
    x = images(batch=1, size=9)
    out, _ = build("rotate").apply(x, torch.zeros(1), torch.tensor([[0.0, 1.0]]))  # cos, sin of 90°
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_rotate_draws_angles_in_range() -> None:
    params = build("rotate", {"degrees": 20.0}).draw(2000, np.random.default_rng(0))
    angles = np.degrees(np.arctan2(params[:, 1], params[:, 0]))
    assert np.abs(angles).max() <= 20.0 + 1e-4 and np.abs(angles).max() > 19.0
    np.testing.assert_allclose(params[:, 0] ** 2 + params[:, 1] ** 2, 1.0, atol=1e-6)


def test_scale_zooms_a_linear_ramp_exactly() -> None:
    # Bilinear interpolation of a linear function is exact: zooming by z maps value a·x + b to a·x/z + b.
    size, z = 16, 1.25
    centred = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    ramp = (0.5 + 0.02 * centred).expand(1, 1, size, size)
    out, _ = build("scale").apply(ramp, torch.zeros(1), torch.tensor([[1.0 / z]]))
    torch.testing.assert_close(out[0, 0, 8], 0.5 + 0.02 * centred / z, atol=1e-5, rtol=0)


def test_scale_draws_in_the_zoom_range() -> None:
    zoom = 1.0 / build("scale", {"zoom": [0.8, 1.2]}).draw(2000, np.random.default_rng(0))[:, 0]
    assert zoom.min() >= 0.8 - 1e-6 and zoom.max() <= 1.2 + 1e-6 and zoom.max() - zoom.min() > 0.35


def test_cutout_blanks_the_clipped_square() -> None:
    x = images(batch=3, size=10) * 0.5 + 0.25  # no pixel is exactly 0
    params = torch.tensor([[0.0, 0.0], [0.45, 0.55], [0.95, 0.3]])  # centres (0,0), (4,5), (9,3)
    out, _ = build("cutout", {"size": 4}).apply(x, torch.zeros(3), params)
    for i, (cy, cx) in enumerate([(0, 0), (4, 5), (9, 3)]):
        expected = x[i].clone()
        expected[:, max(cy - 2, 0) : cy + 2, max(cx - 2, 0) : cx + 2] = 0.0
        assert torch.equal(out[i], expected)


@pytest.mark.parametrize("which", ["brightness", "contrast", "saturation"])
def test_color_jitter_matches_torchvision(which: str) -> None:
    strengths = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, which: 0.5}
    aug = build("color_jitter", strengths)
    x = images(batch=4)
    params = torch.from_numpy(aug.draw(4, np.random.default_rng(0)))
    out, _ = aug.apply(x, torch.zeros(4), params)
    column = ["brightness", "contrast", "saturation"].index(which)
    reference = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
                 "saturation": TF.adjust_saturation}[which]
    for i in range(4):
        factor = float(params[i, column])
        assert 0.5 <= factor <= 1.5
        torch.testing.assert_close(out[i], reference(x[i], factor), atol=1e-5, rtol=0)


def test_gaussian_noise_is_normal_with_sigma() -> None:
    sigma = 0.05
    x = torch.full((64, 3, 16, 16), 0.5)
    out, _ = run(build("gaussian_noise", {"sigma": sigma}), x, torch.zeros(64))
    noise = (out - x).flatten().double().numpy()
    assert abs(noise.mean()) < 3 * sigma / math.sqrt(noise.size)
    assert abs(noise.std() / sigma - 1) < 0.02
    assert stats.kstest(noise / sigma, "norm").pvalue > 1e-3
    # Neighbouring pixels and two samples' noise are uncorrelated.
    a, b = (out[0] - 0.5).flatten(), (out[1] - 0.5).flatten()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.1
    assert abs(float(torch.corrcoef(torch.stack([a[:-1], a[1:]]))[0, 1])) < 0.1


def test_mixup_mixes_images_and_targets_with_the_same_weight() -> None:
    aug = build("mixup", {"alpha": 1.0})
    x, y = images(), targets(aug)
    params = torch.from_numpy(aug.draw(BATCH, np.random.default_rng(0)))
    out, out_y = aug.apply(x, y, params)
    lam = params[:, 0].double()
    partner = torch.arange(BATCH - 1, -1, -1)
    expected_x = lam.view(-1, 1, 1, 1) * x.double() + (1 - lam.view(-1, 1, 1, 1)) * x[partner].double()
    expected_y = lam.view(-1, 1) * y.double() + (1 - lam.view(-1, 1)) * y[partner].double()
    torch.testing.assert_close(out.double(), expected_x, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_y.double(), expected_y, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_y.sum(1), torch.ones(BATCH))


def test_mixup_weights_follow_the_beta_distribution() -> None:
    lam = build("mixup", {"alpha": 0.4}).draw(5000, np.random.default_rng(0))[:, 0]
    assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3


def test_cutmix_targets_match_the_pasted_area() -> None:
    batch, size = 16, 10
    aug = build("cutmix", {"alpha": 1.0})
    # Image i is the constant i + 1, so each output pixel tells which image it came from.
    x = (torch.arange(batch, dtype=torch.float32) + 1).view(-1, 1, 1, 1).expand(batch, 3, size, size).contiguous()
    y = F.one_hot(torch.arange(batch), batch).float()
    out, out_y = aug.apply(x, y, torch.from_numpy(aug.draw(batch, np.random.default_rng(1))))
    partner = torch.arange(batch - 1, -1, -1)
    own_area = (out == x).float().mean(dim=(1, 2, 3))
    torch.testing.assert_close(out_y[torch.arange(batch), torch.arange(batch)], own_area)
    assert torch.all((out == x) | (out == x[partner]))
    torch.testing.assert_close(out_y.sum(1), torch.ones(batch))
    assert (own_area < 1).any() and (own_area > 0).all()


def test_policy_matches_torchvision_and_restores_the_rng() -> None:
    aug = build("trivial_augment")
    x = (torch.randint(0, 256, (4, 3, 12, 12), generator=torch.Generator().manual_seed(0)) / 255.0).float()
    params = torch.from_numpy(aug.draw(4, np.random.default_rng(0)))
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    out, _ = aug.apply(x, torch.zeros(4), params)
    assert torch.equal(torch.random.get_rng_state(), before)
    policy = v2.TrivialAugmentWide()
    for i in range(4):
        torch.manual_seed(int(params[i, 1]) * 2**24 + int(params[i, 2]))
        expected = policy((x[i] * 255).round().to(torch.uint8))
        assert torch.equal((out[i] * 255).round().to(torch.uint8), expected)


def test_policy_applies_with_probability_p() -> None:
    aug = build("rand_augment", {"p": 0.5})
    x = images(batch=16)
    params = torch.from_numpy(aug.draw(16, np.random.default_rng(0)))
    out, _ = aug.apply(x, torch.zeros(16), params)
    pixels = (x * 255).round()
    untouched = [torch.equal((out[i] * 255).round(), pixels[i]) for i in range(16)]
    assert untouched == (params[:, 0] >= 0.5).tolist()


def test_policy_works_on_one_channel_images() -> None:
    out, _ = run(build("rand_augment"), images(batch=4, channels=1, size=8), torch.zeros(4))
    assert out.shape == (4, 1, 8, 8)


# ---------------------------------------------------------------------------------------------------------------


def test_pipeline_makes_targets_soft_only_for_label_mixing() -> None:
    x, labels = images(), torch.arange(BATCH) % CLASSES
    plain = AugmentationPipeline([build("hflip"), build("none")], CLASSES)
    params = plain.draw_epoch(BATCH, np.random.default_rng(0), torch.device("cpu"))
    assert len(params) == 1 and not plain.soft_targets
    _, y = plain(x, labels, params, 0)
    assert torch.equal(y, labels)
    mixing = AugmentationPipeline([build("hflip"), build("cutmix")], CLASSES)
    _, y = mixing(x, labels, mixing.draw_epoch(BATCH, np.random.default_rng(0), torch.device("cpu")), 0)
    assert mixing.soft_targets and y.dtype == torch.float32 and y.shape == (BATCH, CLASSES)
    torch.testing.assert_close(y.sum(1), torch.ones(BATCH))


def test_pipeline_indexes_the_epoch_parameters_by_batch_position() -> None:
    pipe = AugmentationPipeline([build("hflip")], CLASSES)
    params = [torch.tensor([[0.9], [0.9], [0.1], [0.9]])]
    x = images(batch=2)
    out, _ = pipe(x, torch.zeros(2, dtype=torch.long), params, 2)  # rows 2 and 3: flip, keep
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("trivial_augment", "rand_augment")])
def test_same_result_on_cpu_and_gpu(name: str) -> None:
    aug = build(name)
    x, y = images(), targets(build(name))
    params = torch.from_numpy(aug.draw(BATCH, np.random.default_rng(0)))
    cpu = aug.apply(x, y, params)
    gpu = aug.apply(x.cuda(), y.cuda(), params.cuda())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-6, rtol=0)
