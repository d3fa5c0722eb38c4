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


# ---------------------------------------------------------------------------------------------------------------
# spatter: random, so compared with the package on the package's own noise draw (pixel by pixel) and on ours (by
# the mean change per severity).

def _spatter_layer_is_empty(shape: tuple[int, int], severity: int) -> bool:
    """Whether the package's next draw (same np.random state) leaves no liquid above the threshold: the package
    then divides 0 by 0 and returns garbage (NaN cast to uint8), where ours leaves the image unchanged."""
    from skimage.filters import gaussian

    loc, scale, sigma, threshold = CORRUPTIONS["spatter"].parameters[severity - 1][:4]
    state = np.random.get_state()
    layer = gaussian(np.random.normal(size=shape, loc=loc, scale=scale), sigma=sigma)
    np.random.set_state(state)
    return bool((layer < threshold).all())


@pytest.mark.parametrize("severity", SEVERITIES)
def test_spatter_matches_imagecorruptions_on_its_own_draw(severity: int, photos: list[np.ndarray]) -> None:
    """Given the noise the package draws, the rest of spatter (blur, threshold, Canny, chamfer distance, box blurs,
    equalization, emboss; or the mud mask) is the package's, pixel for pixel."""
    from lossbench.shift.spatter import _spatter_noise

    parameters = CORRUPTIONS["spatter"].parameters[severity - 1]
    changes = []
    for image in photos:
        for seed in range(3):
            np.random.seed(seed)
            if _spatter_layer_is_empty(image.shape[:2], severity):
                continue
            ref = _reference(image, "spatter", severity)
            np.random.seed(seed)
            noise = np.random.normal(size=image.shape[:2], loc=parameters[0], scale=parameters[1])
            x = torch.from_numpy(np.array(image)).float().permute(2, 0, 1)[None] / 255
            ours = _spatter_noise(x, torch.from_numpy(noise)[None], parameters)[0].permute(1, 2, 0).double() * 255
            changes.append(np.abs(ref - image).mean())
            # Within one level everywhere: imagecorruptions truncates its result to uint8, we keep the float.
            assert np.abs(ours.numpy() - ref).max() <= 1.0 + 1e-3, (severity, seed)
    assert len(changes) >= 4 and np.mean(changes) > 2, changes


def test_spatter_edges_and_distance_match_opencv() -> None:
    """The torch Canny and chamfer distance against cv2.Canny and cv2.distanceTransform on liquid layers."""
    import cv2
    from skimage.filters import gaussian

    from lossbench.shift.spatter import _canny, _chamfer_distance

    rng = np.random.default_rng(0)
    for severity in (1, 2, 3):
        loc, scale, sigma, threshold = CORRUPTIONS["spatter"].parameters[severity - 1][:4]
        layers = []
        for _ in range(4):
            layer = gaussian(rng.normal(size=(32, 40), loc=loc, scale=scale), sigma=sigma)
            layer[layer < threshold] = 0
            layers.append((layer * 255).astype(np.uint8))
        edges = _canny(torch.from_numpy(np.stack(layers)).float())
        for layer, ours in zip(layers, edges):
            ref = cv2.Canny(layer, 50, 150) > 0
            assert ref.any() and np.array_equal(ours.numpy(), ref)
            _, ref_dist = cv2.threshold(cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5),
                                        20, 20, cv2.THRESH_TRUNC)
            np.testing.assert_allclose(_chamfer_distance(ours[None])[0].numpy(), ref_dist, atol=1e-4)


def test_spatter_changes_images_as_much_as_imagecorruptions(photos: list[np.ndarray]) -> None:
    """Our draws against the package's: the mean absolute change per severity, averaged over 60 draws on each of
    two 32×32 photographs, within 20 % of the package's (the draw-to-draw spread of the mean is 3–8 %)."""
    from PIL import Image

    images = [photos[0], np.asarray(Image.fromarray(photos[1]).resize((32, 32), Image.BILINEAR))]
    draws = 60
    for severity in SEVERITIES:
        np.random.seed(severity)
        ref_changes, our_changes = [], []
        for image in images:
            for _ in range(draws):
                # Draws that leave no liquid are the package's NaN case: counted as no change, which ours does.
                empty = _spatter_layer_is_empty(image.shape[:2], severity)
                out = _reference(image, "spatter", severity)
                ref_changes.append(0.0 if empty else np.abs(out - image).mean())
            x = torch.from_numpy(np.array(image)).float().permute(2, 0, 1)[None].repeat(draws, 1, 1, 1) / 255
            out = corrupt(x, "spatter", severity, torch.Generator().manual_seed(severity))
            our_changes.append(float((out - x).abs().mean()) * 255)
        ref, ours = float(np.mean(ref_changes)), float(np.mean(our_changes))
        assert ref > 2 and abs(ours - ref) < 0.2 * ref, (severity, ours, ref)


def test_spatter_grows_with_severity_and_follows_the_generator() -> None:
    # On images of uniformly random pixels: water brightens and mud darkens, so on one flat colour the order of
    # severities 3 (most water) and 4 (first mud) depends on that colour, in the package as here.
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    changes = [float((corrupt(x, "spatter", s, torch.Generator().manual_seed(s)) - x).abs().mean())
               for s in SEVERITIES]
    assert all(a < b for a, b in zip(changes, changes[1:])), changes
    # Per-sample randomness: the same image in every row of the batch gets a different splash in each.
    same = x[:1].repeat(4, 1, 1, 1)
    out = corrupt(same, "spatter", 2, torch.Generator().manual_seed(1))
    assert all(not torch.equal(out[0], out[i]) for i in range(1, 4))


@pytest.mark.parametrize("severity", SEVERITIES)
def test_spatter_on_grey_images_is_the_luminance_of_the_rgb_one(severity: int) -> None:
    """A grey image gets the luminance (the package's rgb2gray weights) of what the same draw does to its RGB
    copy: exact for mud; for water exact until a channel clips at 1 (kept below it here)."""
    grey = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(4)) * 0.3
    rgb = corrupt(grey.repeat(1, 3, 1, 1), "spatter", severity, torch.Generator().manual_seed(5))
    ours = corrupt(grey, "spatter", severity, torch.Generator().manual_seed(5))
    weights = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)
    luminance = (rgb * weights).sum(1, keepdim=True) + grey * (1 - weights.sum())
    assert not torch.equal(ours, grey)
    torch.testing.assert_close(ours, luminance, atol=1e-4, rtol=0)
