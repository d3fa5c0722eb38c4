"""The corruptions against the `imagecorruptions` package (Hendrycks & Dietterich's reference code at any image
size): deterministic ones pixel for pixel on sample photographs, random ones by their statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lossbench.shift.corruptions import CORRUPTIONS, SEVERITIES, corrupt

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    imagecorruptions = pytest.importorskip("imagecorruptions")

DETERMINISTIC = [n for n, c in CORRUPTIONS.items() if not c.random]
RANDOM = [n for n, c in CORRUPTIONS.items() if c.random]
#: gaussian_blur's reference call passes `multichannel` to skimage, which current skimage refuses; it is compared
#: with skimage.filters.gaussian directly below.
BROKEN_IN_REFERENCE = {"gaussian_blur"}


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Two real photographs (scikit-learn's sample images) at 32×32 and a non-square 40×36, uint8 HWC."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    return [np.asarray(Image.fromarray(images[0]).resize((32, 32), Image.BILINEAR)),
            np.asarray(Image.fromarray(images[1]).resize((40, 36), Image.BILINEAR))]


def _ours(image: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Our corruption of a uint8 HWC (or HW grey) image, as float HWC in 0..255."""
    x = torch.from_numpy(np.array(image)).float() / 255
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    out = corrupt(x, name, severity, torch.Generator().manual_seed(seed))
    return out[0].permute(1, 2, 0).double().numpy() * 255


def _reference(image: np.ndarray, name: str, severity: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return imagecorruptions.corrupt(image, severity=severity, corruption_name=name).astype(np.float64)


@pytest.mark.parametrize("name", [n for n in DETERMINISTIC if n not in BROKEN_IN_REFERENCE])
def test_deterministic_corruptions_match_imagecorruptions(name: str, photos: list[np.ndarray]) -> None:
    for image in photos:
        for severity in SEVERITIES:
            ours, ref = _ours(image, name, severity), _reference(image, name, severity)
            diff = np.abs(ours - ref)
            change = np.abs(ref - image).mean()
            assert change > 2, f"{name} {severity} should visibly change the image"
            if name == "jpeg_compression":
                # libjpeg's integer DCT and its rounding of colour conversion differ from our float ones by a
                # fraction of a level, which now and then moves a coefficient across a quantization boundary:
                # one step of a 7–100 quantizer changes that 8×8 block by a few levels. On average the two
                # encoders agree within 3 levels (of 255), far below what the corruption itself changes.
                assert diff.mean() < 3 and diff.mean() < 0.25 * change, (name, severity, diff.mean(), change)
            else:
                # imagecorruptions truncates its float result to uint8 (np.uint8(x)), we keep the float: the
                # difference is below one level, plus float32-vs-float64 rounding.
                assert diff.max() <= 1.0 + 1e-3, (name, severity, diff.max())


@pytest.mark.parametrize("name", ["defocus_blur", "contrast", "brightness", "jpeg_compression", "pixelate",
                                  "saturate"])
def test_grey_images_match_imagecorruptions(name: str, photos: list[np.ndarray]) -> None:
    # imagecorruptions turns a grey image into three equal channels; ours works on the one channel directly.
    grey = photos[0].mean(axis=2).round().astype(np.uint8)
    for severity in SEVERITIES:
        ours, ref = _ours(grey, name, severity)[..., 0], _reference(grey, name, severity)[..., 0]
        tolerance = 3.0 if name == "jpeg_compression" else 1.0 + 1e-3
        assert np.abs(ours - ref).mean() <= tolerance, (name, severity)
        if name != "jpeg_compression":
            assert np.abs(ours - ref).max() <= tolerance


def test_gaussian_blur_matches_skimage(photos: list[np.ndarray]) -> None:
    from skimage.filters import gaussian

    for image in photos:
        for severity, sigma in zip(SEVERITIES, CORRUPTIONS["gaussian_blur"].parameters):
            ref = gaussian(image / 255.0, sigma=sigma, channel_axis=-1) * 255
            np.testing.assert_allclose(_ours(image, "gaussian_blur", severity), ref, atol=1e-3)


def test_saturate_leaves_grey_images_alone() -> None:
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for severity in SEVERITIES:
        assert torch.equal(corrupt(x, "saturate", severity), x)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_corruption_runs_on_tiny_images(name: str, channels: int) -> None:
    x = torch.rand(4, channels, 8, 8, generator=torch.Generator().manual_seed(1))
    for severity in SEVERITIES:
        out = corrupt(x, name, severity, torch.Generator().manual_seed(2))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_follow_the_generator(name: str) -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    a = corrupt(x, name, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, corrupt(x, name, 3, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, corrupt(x, name, 3, torch.Generator().manual_seed(8)))
    with pytest.raises(ValueError, match="random"):
        corrupt(x, name, 3)


def _grey_field(level: float, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), round(level * 255), dtype=np.uint8)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_random_corruptions_match_imagecorruptions_statistics(severity: int) -> None:
    """On a uniform mid-grey image (no clipping for Gaussian noise up to 0.38 · 1.3 σ only rarely), the statistics
    of our draws and of imagecorruptions' draws agree with each other and with the parameters."""
    np.random.seed(severity)
    image = _grey_field(0.5)
    x = 128 / 255
    # Gaussian noise: the per-pixel residual's standard deviation is the severity's sigma (before clipping).
    sigma = CORRUPTIONS["gaussian_noise"].parameters[severity - 1]
    ours = _ours(image, "gaussian_noise", severity) / 255 - x
    ref = _reference(image, "gaussian_noise", severity) / 255 - x
    inside = (np.abs(ours) < x - 0.01)
    clipped_fraction = 1 - inside.mean()
    assert abs(ours.std() - ref.std()) < 0.02
    if clipped_fraction < 0.01:
        assert abs(ours.std() - sigma) < 0.01
    # Shot noise: photon counts are Poisson with mean = variance = x · photons.
    photons = CORRUPTIONS["shot_noise"].parameters[severity - 1]
    counts = _ours(image, "shot_noise", severity).round() / 255 * photons
    ref_counts = _reference(image, "shot_noise", severity) / 255 * photons
    assert abs(counts.mean() - ref_counts.mean()) < 0.05 * x * photons + 0.1
    assert abs(counts.var() - ref_counts.var()) < 0.15 * x * photons + 0.2
    # Impulse noise: a fraction `amount` of the values becomes 0 or 1, half each.
    amount = CORRUPTIONS["impulse_noise"].parameters[severity - 1]
    ours = _ours(image, "impulse_noise", severity)
    ref = _reference(image, "impulse_noise", severity)
    for out in (ours, ref):
        hit = np.abs(out - 128) > 1
        assert abs(hit.mean() - amount) < 0.01 + 0.1 * amount
        assert abs((out[hit] > 128).mean() - 0.5) < 0.08


def test_severity_outside_one_to_five_is_refused() -> None:
    with pytest.raises(ValueError, match="severity 6"):
        corrupt(torch.zeros(1, 3, 8, 8), "contrast", 6)
