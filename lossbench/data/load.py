"""The data request's entry points: `dataset_identity` (cheap, for cell ids) and `load_dataset` (tensors for the
engine), with the checks `validate` runs without decoding (`known_image_shape`, `check_resized_memory`,
`check_dataset_files`). Each takes the request, a `DatasetConfig`.

Loading is: decode the source once into the tensor cache (or read the cache), then take the requested subsets
and validation hold-out with a fixed seed (the same images for every cell), resize if asked, and measure the
per-channel mean and std on what remains of the training split.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from lossbench.config.dataset import DatasetConfig, InIdentity
from lossbench.data.base import ImageData, ImageShape
from lossbench.data.bounds import check_fits_memory, check_root_kind
from lossbench.data.cache import cache_path, load_cached, store_cached
from lossbench.data.sources import DATASETS, DatasetSource
from lossbench.data.splits import stratified_holdout, stratified_sample, subset_count
from lossbench.errors import DataError, LossbenchError, UnknownComponentError
from lossbench.registry import component_params

# Independent random streams per selection, so changing the test subset never changes the training images.
_TRAIN_STREAM, _TEST_STREAM, _VAL_STREAM = 1, 2, 3
# The seed of every selection: all cells and seeds of a suite train and test on the same images, so they pair.
_SPLIT_SEED = 0
# Images resized per chunk, to bound the float32 working memory (1024 x 3 x 224 x 224 x 4 B ≈ 0.6 GB at most).
_RESIZE_CHUNK = 1024


def dataset_identity(dataset: DatasetConfig) -> str:
    """A string naming the data, cheap to compute (nothing is decoded), e.g. `cifar10:torchvision`.

    With no option set it names the source only: `digits:sklearn`, `cifar10:folder:cifar10-jpeg.tar.gz:5a46c22328c1`
    (12 hex of the archive's sha256; for a directory, of its image paths and sizes). Each option that changes the
    tensors (marked `InIdentity` in DatasetConfig) and differs from its default follows as `|key=value`, so it is
    exactly the identity that `load_dataset` gives the data, e.g. `cifar10:torchvision|train=5000|val=0.1`. A
    source's own parameters (e.g. EMNIST's split) are named by the source: `emnist:balanced:torchvision`. Raises
    DataError when the root is unusable, UnknownComponentError when the name is not a dataset.
    """
    return f"{dataset.name}:{_source(dataset).describe(_root_path(dataset.root))}{_identity_suffix(dataset)}"


def known_image_shape(dataset: DatasetConfig) -> ImageShape | None:
    """The shape of the images `load_dataset` will give, without decoding anything; None when only decoding tells
    (e.g. an image folder without `image_size`). `image_size` makes every image that square, whatever the
    source's own size."""
    shape = _source(dataset).known_shape(_root_path(dataset.root))
    if shape is None or dataset.image_size is None:
        return shape
    return replace(shape, height=dataset.image_size, width=dataset.image_size)


def check_resized_memory(dataset: DatasetConfig) -> None:
    """Raise DataError when the images resized to `dataset.image_size` would not fit in memory, where the image
    counts and channels are known without reading the data (the official files of a torchvision dataset)."""
    image_size = dataset.image_size
    if image_size is None:
        return
    try:
        source = _source(dataset)
        path = _root_path(dataset.root)
        shape = source.known_shape(path)
    except LossbenchError:
        return  # an unusable root or source is reported by the checks of its own
    sizes = type(source).known_sizes(path) or (type(source).official_sizes if shape else None)
    if sizes is None or shape is None:
        return  # counted again from the decoded tensors, before they are resized
    total = 0
    for spec, size in ((dataset.train_subset, sizes[0]), (dataset.test_subset, sizes[1])):
        # A count over the split's size is its own error, reported by validation beside this one.
        total += size if spec is None else min(spec, size) if isinstance(spec, int) else subset_count(spec, size, "")
    check_fits_memory(
        f"{dataset.name} resized to image_size {image_size}: {total:,} images of "
        f"{shape.channels}×{image_size}×{image_size}",
        total * shape.channels * image_size ** 2,
        hint="lower dataset.image_size, or take a subset (dataset.train_subset, dataset.test_subset)")


def check_dataset_files(dataset: DatasetConfig) -> None:
    """What `validate` checks of the data beyond its identity, without decoding it: for image folders the full
    listing and every image's header. Raises DataError naming the first few bad files and their count."""
    _source(dataset).check_files(_root_path(dataset.root))


def load_dataset(dataset: DatasetConfig, *, cache_dir: Path) -> ImageData:
    """The dataset (from its root, or its source's default place when None) as CPU tensors ready for the engine.

    The source is decoded once into `cache_dir` and read back from there afterwards. Then `train_subset` /
    `test_subset` keep a class-stratified subset (an int is a number of images, a float in (0, 1] a fraction);
    `val_fraction` in [0, 1) holds out a stratified part of the training split as `val_x`/`val_y`; `image_size`
    resizes every image to a square of that many pixels. `mean`/`std` are per channel in [0, 1] units on the final
    training split. `identity` is `dataset_identity` of the same request. The source's own parameters (e.g.
    `split="letters"` for emnist) are the request's extra keys.
    """
    name = dataset.name
    source = _source(dataset)
    root_path = _root_path(dataset.root)
    source_identity = f"{name}:{source.describe(root_path)}"
    key = source_identity + source.decode_options()
    path = cache_path(Path(cache_dir), name, key)

    data = load_cached(path, key)
    if data is None:
        decoded = source.decode(root_path, download=dataset.download,
                                download_dir=Path(cache_dir) / "torchvision")
        data = replace(
            decoded,
            name=name,
            identity=source_identity,
            train_x=decoded.train_x.contiguous(),
            test_x=decoded.test_x.contiguous(),
        )
        _check_decoded(data)
        store_cached(path, key, data)
    return _prepare(replace(data, name=name, identity=source_identity + _identity_suffix(dataset)), dataset)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images [N,C,H,W], in [0, 1] pixel units.

    Counted with a 256-bin histogram per channel, which is exact in float64 and needs no float copy of the
    images. A constant channel gets std 1.0, so normalizing by it does not divide by zero.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        mean = float((counts * values).sum() / counts.sum())
        std = float(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt())
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images [N,C,H,W] resized to [N,C,size,size] (antialiased bilinear, rounded back to uint8)."""
    if images.shape[-2:] == (size, size):
        return images
    chunks = []
    for start in range(0, len(images), _RESIZE_CHUNK):
        chunk = images[start:start + _RESIZE_CHUNK].to(torch.float32)
        out = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        chunks.append(out.round_().clamp_(0, 255).to(torch.uint8))
    if not chunks:
        return images.new_empty((0, images.shape[1], size, size))
    return torch.cat(chunks).contiguous()


def _prepare(data: ImageData, dataset: DatasetConfig) -> ImageData:
    """Subsets, validation hold-out, resize and channel statistics, in that order."""
    train_x, train_y, test_x, test_y = data.train_x, data.train_y, data.test_x, data.test_y
    if dataset.train_subset is not None:
        count = subset_count(dataset.train_subset, len(train_y), "train_subset")
        keep = stratified_sample(train_y, count, seed=_SPLIT_SEED, stream=_TRAIN_STREAM)
        train_x, train_y = train_x[keep], train_y[keep]
    if dataset.test_subset is not None:
        count = subset_count(dataset.test_subset, len(test_y), "test_subset")
        keep = stratified_sample(test_y, count, seed=_SPLIT_SEED, stream=_TEST_STREAM)
        test_x, test_y = test_x[keep], test_y[keep]
    val_x = val_y = None
    if dataset.val_fraction > 0:
        count = max(1, int(dataset.val_fraction * len(train_y) + 0.5))
        if count >= len(train_y):
            raise DataError(
                f"val_fraction = {dataset.val_fraction} of {len(train_y)} training images leaves none to train on",
                option="val_fraction",
            )
        keep, held = stratified_holdout(train_y, count, seed=_SPLIT_SEED, stream=_VAL_STREAM)
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    size = dataset.image_size
    if size is not None:
        count = len(train_x) + len(test_x) + (0 if val_x is None else len(val_x))
        check_fits_memory(
            f"{data.name}: {count:,} images of {train_x.shape[1]}×{size}×{size} (image_size {size})",
            count * train_x.shape[1] * size ** 2,
            hint="lower dataset.image_size, or take a subset (dataset.train_subset, dataset.test_subset)")
        train_x = resize_images(train_x, size)
        test_x = resize_images(test_x, size)
        val_x = None if val_x is None else resize_images(val_x, size)
    mean, std = channel_stats(train_x)
    return replace(
        data, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, val_x=val_x, val_y=val_y,
        mean=mean, std=std,
    )


def _source(dataset: DatasetConfig) -> DatasetSource:
    """An instance of the dataset's registered source with its own parameters (the request's extra keys); a
    source with an `image_size` parameter decodes to the request's."""
    name = dataset.name
    cls = DATASETS.get(name)
    if not issubclass(cls, DatasetSource):
        raise UnknownComponentError(
            message=f"custom dataset '{name}' must subclass lossbench.data.sources.DatasetSource", value=name
        )
    resolved = DATASETS.resolve_params(name, dataset.source_params)
    try:
        if any(p.name == "image_size" for p in component_params(cls)):
            resolved["image_size"] = dataset.image_size
        return cls(**resolved)
    except (TypeError, ValueError) as exc:
        raise DataError(f"dataset '{name}': {exc}") from None


def _identity_suffix(dataset: DatasetConfig) -> str:
    """`|key=value` for each option of the request that changes the tensors and differs from its default, in the
    order DatasetConfig declares them, e.g. `|train=5000|val=0.1`."""
    parts = []
    for name, field in type(dataset).model_fields.items():
        marker = next((m for m in field.metadata if isinstance(m, InIdentity)), None)
        value = getattr(dataset, name)
        if marker is not None and value != field.default:
            parts.append(f"|{marker.key}={value}")
    return "".join(parts)


def _root_path(root: str | os.PathLike[str] | None) -> Path | None:
    """`root` as a path, refused at once when it is a FIFO or a device (a read would block or never end)."""
    if root is None:
        return None
    path = Path(root).expanduser()
    check_root_kind(path)
    return path


def _check_decoded(data: ImageData) -> None:
    """Guard the contract for every source, custom ones included, before anything is cached."""
    for split, x, y in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"dataset '{data.name}' decoded its {split} split as {x.dtype} {tuple(x.shape)} images and "
                f"{y.dtype} {tuple(y.shape)} labels; expected [N,C,H,W] uint8 and [N] int64"
            )
        if len(y) == 0:
            # Zero images would train nothing and record the cell as diverged; say so before any cell runs.
            raise DataError(f"dataset '{data.name}' has no {split} images",
                            details=["a model needs training images to learn from and test images to be scored on"])
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(data.classes)):
            raise DataError(f"dataset '{data.name}': {split} labels fall outside 0..{len(data.classes) - 1}")
    if data.train_x.shape[1:] != data.test_x.shape[1:]:
        raise DataError(
            f"dataset '{data.name}': train images are {tuple(data.train_x.shape[1:])} but test images are "
            f"{tuple(data.test_x.shape[1:])}"
        )
