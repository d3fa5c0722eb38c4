"""Dataset sources, the tensor cache, subsets and identities, on real (tiny) tensors and files in tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from lossbench.config.dataset import DatasetConfig
from lossbench.data import DATASETS, ImageData, cifar, dataset_identity, digits, load_dataset, mnist, sources
from lossbench.data.idx import read_idx
from lossbench.data.load import channel_stats
from lossbench.errors import DataError, UnknownComponentError

from conftest import TINY_SUITE

TENSORS = ("train_x", "train_y", "test_x", "test_y")


def same_tensors(a: ImageData, b: ImageData, fields: tuple[str, ...] = TENSORS) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


# ---------------------------------------------------------------------------------------------------------------
# Builders of tiny datasets on disk.


def make_folder(
    base: Path,
    layout: dict[str, dict[str, int]],
    *,
    mode: str = "RGB",
    fmt: str = "png",
    size: tuple[int, int] = (4, 3),
    seed: int = 0,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Write `layout` (split -> class -> image count) as image files under `base`; return split -> (class, array)
    in the order the loader must produce (class folders sorted, then file names)."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[str, np.ndarray]]] = {}
    for split, classes in layout.items():
        written[split] = []
        for cls in sorted(classes):
            folder = base / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(classes[cls]):
                shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
                array = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(array, mode).save(folder / f"{i:03d}.{fmt}")
                written[split].append((cls, array))
    return written


def expected_tensors(written: dict[str, list[tuple[str, np.ndarray]]], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted({c for c, _ in written["train"]})
    arrays = [a if a.ndim == 3 else a[:, :, None] for _, a in written[split]]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    y = torch.tensor([classes.index(c) for c, _ in written[split]])
    return x, y


def make_tar(src: Path, out: Path, top: str | None) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        for item in sorted(src.iterdir()):
            tf.add(item, arcname=f"{top}/{item.name}" if top else item.name)
    return out


def make_zip(src: Path, out: Path, top: str | None) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for file in sorted(src.rglob("*")):
            rel = file.relative_to(src).as_posix()
            zf.write(file, f"{top}/{rel}" if top else rel)
    return out


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped IDX file of uint8 values: magic 0,0,0x08,rank, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_idx_set(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 5, 6), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 5, 6), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def two_class_folder(tmp_path: Path) -> tuple[Path, dict[str, list[tuple[str, np.ndarray]]]]:
    root = tmp_path / "pets"
    written = make_folder(root, {"train": {"dog": 3, "cat": 2}, "test": {"cat": 1, "dog": 2}})
    return root, written


# ---------------------------------------------------------------------------------------------------------------
# The registry.


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_a_doc_and_builds_without_arguments(name: str) -> None:
    info = {i.name: i for i in DATASETS.describe()}[name]
    assert info.doc and "\n" not in info.doc
    assert all(not p.required for p in info.params)
    assert isinstance(DATASETS.get(name)(), sources.DatasetSource)


def test_registered_names() -> None:
    assert DATASETS.names() == ["cifar10", "cifar100", "digits", "emnist", "fashion_mnist", "image_folder", "kmnist",
                                "mnist", "stl10", "svhn"]


# ---------------------------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_values_and_classes(cache: Path) -> None:
    data = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    assert data.identity == "digits:sklearn" and data.name == "digits"
    assert data.classes == tuple(str(d) for d in range(10))
    assert data.train_x.shape == (1438, 1, 8, 8) and data.test_x.shape == (359, 1, 8, 8)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.train_x.is_contiguous() and data.train_x.device.type == "cpu"
    assert int(data.train_x.max()) == 255 and int(data.train_x.min()) == 0
    assert data.val_x is None and data.val_y is None
    # 0..16 scaled by 255/16 and rounded: every stored value is one of 17 levels.
    levels = {int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)}
    assert set(torch.unique(data.train_x).tolist()) <= levels
    # Stratified 80/20: every class has about a fifth of its images in the test split.
    counts_test = torch.bincount(data.test_y, minlength=10)
    counts_all = counts_test + torch.bincount(data.train_y, minlength=10)
    assert torch.all((counts_test - 0.2 * counts_all).abs() <= 1)


def test_digits_split_is_deterministic(tmp_path: Path) -> None:
    a = load_dataset(DatasetConfig(name="digits"), cache_dir=tmp_path / "a")
    b = load_dataset(DatasetConfig(name="digits"), cache_dir=tmp_path / "b")
    assert same_tensors(a, b)


def test_digits_mean_and_std_match_torch(cache: Path) -> None:
    data = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    pixels = data.train_x.to(torch.float64) / 255
    assert data.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert data.std == pytest.approx(pixels.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)


def test_channel_stats_of_a_constant_channel_avoid_zero_std() -> None:
    images = torch.full((2, 1, 3, 3), 51, dtype=torch.uint8)
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.2,)) and std == (1.0,)


# ---------------------------------------------------------------------------------------------------------------
# image_folder


def test_image_folder_directory_gives_exact_pixels(two_class_folder, cache: Path) -> None:
    root, written = two_class_folder
    data = load_dataset(DatasetConfig(name="image_folder", root=str(root)), cache_dir=cache)
    assert data.classes == ("cat", "dog")
    for split in ("train", "test"):
        x, y = expected_tensors(written, split)
        assert torch.equal(getattr(data, f"{split}_x"), x)
        assert torch.equal(getattr(data, f"{split}_y"), y)
    assert data.train_x.shape[1:] == (3, 3, 4)  # RGB, height 3, width 4
    assert data.identity.startswith("image_folder:folder:pets:")


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
@pytest.mark.parametrize("top", [None, "pets"])
def test_image_folder_archives_match_the_directory(
    two_class_folder, tmp_path: Path, kind: str, top: str | None
) -> None:
    root, _ = two_class_folder
    archive = tmp_path / f"pets.{kind}"
    (make_tar if kind == "tar.gz" else make_zip)(root, archive, top)
    from_dir = load_dataset(DatasetConfig(name="image_folder", root=root), cache_dir=tmp_path / "c1")
    from_archive = load_dataset(DatasetConfig(name="image_folder", root=archive), cache_dir=tmp_path / "c2")
    assert from_archive.classes == from_dir.classes
    assert same_tensors(from_dir, from_archive)


def test_cifar10_reads_an_image_folder_archive(two_class_folder, tmp_path: Path) -> None:
    root, written = two_class_folder
    archive = make_tar(root, tmp_path / "mini.tgz", "mini")
    data = load_dataset(DatasetConfig(name="cifar10", root=archive), cache_dir=tmp_path / "c")
    assert data.identity.startswith("cifar10:folder:mini.tgz:")
    assert torch.equal(data.test_x, expected_tensors(written, "test")[0])


def test_grayscale_images_give_one_channel(tmp_path: Path, cache: Path) -> None:
    written = make_folder(tmp_path / "g", {"train": {"a": 2, "b": 2}, "test": {"a": 1}}, mode="L")
    data = load_dataset(DatasetConfig(name="image_folder", root=tmp_path / "g"), cache_dir=cache)
    assert data.channels == 1
    assert torch.equal(data.train_x, expected_tensors(written, "train")[0])
    assert len(data.mean) == len(data.std) == 1


def test_mixed_gray_and_rgb_give_rgb(tmp_path: Path, cache: Path) -> None:
    make_folder(tmp_path / "m", {"train": {"a": 1}, "test": {"a": 1}}, mode="L")
    make_folder(tmp_path / "m", {"train": {"b": 1}}, mode="RGB")
    data = load_dataset(DatasetConfig(name="image_folder", root=tmp_path / "m"), cache_dir=cache)
    assert data.channels == 3
    gray = data.train_x[0]  # class "a" sorts first
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_jpeg_images_load(tmp_path: Path, cache: Path) -> None:
    make_folder(tmp_path / "j", {"train": {"a": 2, "b": 1}, "test": {"b": 1}}, fmt="jpg", size=(8, 8))
    data = load_dataset(DatasetConfig(name="image_folder", root=tmp_path / "j"), cache_dir=cache)
    assert data.train_x.shape == (3, 3, 8, 8) and data.test_y.tolist() == [1]


def test_mixed_sizes_are_resized_to_the_most_common_with_a_warning(tmp_path: Path, cache: Path) -> None:
    make_folder(tmp_path / "s", {"train": {"a": 3}, "test": {"a": 1}}, size=(6, 5))
    make_folder(tmp_path / "s", {"train": {"b": 1}}, size=(9, 9), seed=1)
    with pytest.warns(UserWarning, match="most common size 5x6"):
        data = load_dataset(DatasetConfig(name="image_folder", root=tmp_path / "s"), cache_dir=cache)
    assert data.train_x.shape == (4, 3, 5, 6)


def test_image_size_resizes_every_image(two_class_folder, cache: Path) -> None:
    root, _ = two_class_folder
    data = load_dataset(DatasetConfig(name="image_folder", root=root, image_size=7), cache_dir=cache)
    assert data.train_x.shape[1:] == (3, 7, 7) and data.test_x.shape[1:] == (3, 7, 7)
    assert data.identity.endswith("|size=7")
    digits = load_dataset(DatasetConfig(name="digits", image_size=16), cache_dir=cache)
    assert digits.train_x.shape[1:] == (1, 16, 16) and digits.train_x.dtype == torch.uint8
    assert digits.identity == "digits:sklearn|size=16"


def test_a_class_missing_from_test_is_fine_an_unknown_one_is_an_error(tmp_path: Path, cache: Path) -> None:
    make_folder(tmp_path / "ok", {"train": {"a": 1, "b": 1, "c": 1}, "test": {"b": 1}})
    data = load_dataset(DatasetConfig(name="image_folder", root=tmp_path / "ok"), cache_dir=cache)
    assert data.classes == ("a", "b", "c") and data.test_y.tolist() == [1]
    make_folder(tmp_path / "bad", {"train": {"a": 1}, "test": {"a": 1, "zebra": 1}})
    with pytest.raises(DataError, match="zebra"):
        load_dataset(DatasetConfig(name="image_folder", root=tmp_path / "bad"), cache_dir=cache)


def test_hidden_files_and_non_images_are_ignored(two_class_folder, cache: Path) -> None:
    root, written = two_class_folder
    (root / "README.txt").write_text("hello")
    (root / "train" / "cat" / "._000.png").write_bytes(b"junk from macOS")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset(DatasetConfig(name="image_folder", root=root), cache_dir=cache)
    assert torch.equal(data.train_x, expected_tensors(written, "train")[0])


def test_archive_identity_follows_content_not_location(two_class_folder, tmp_path: Path) -> None:
    root, _ = two_class_folder
    archive = make_tar(root, tmp_path / "pets.tar.gz", "pets")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = Path(shutil.copy(archive, elsewhere / "pets.tar.gz"))
    first = dataset_identity(DatasetConfig(name="image_folder", root=str(archive)))
    assert first == dataset_identity(DatasetConfig(name="image_folder", root=str(copy)))
    assert first.startswith("image_folder:folder:pets.tar.gz:") and len(first.rsplit(":", 1)[1]) == 12
    raw = bytearray(copy.read_bytes())
    raw[-1] ^= 0xFF  # gzip trailer: the sha256 changes, the listing check still passes
    copy.write_bytes(bytes(raw))
    assert dataset_identity(DatasetConfig(name="image_folder", root=str(copy))) != first


def test_directory_identity_follows_content_not_location(two_class_folder, tmp_path: Path) -> None:
    root, _ = two_class_folder
    copy = shutil.copytree(root, tmp_path / "elsewhere" / "pets")
    def identity(path: Path) -> str:
        return dataset_identity(DatasetConfig(name="image_folder", root=path))

    assert identity(root) == identity(copy)
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(Path(copy) / "train" / "cat" / "new.png")
    assert identity(root) != identity(copy)


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_root_is_a_data_error(tmp_path: Path) -> None:
    for name in ("image_folder", "cifar10", "mnist"):
        with pytest.raises(DataError, match="does not exist") as info:
            dataset_identity(DatasetConfig(name=name, root=str(tmp_path / "nowhere")))
        assert str(tmp_path / "nowhere") in str(info.value)


def test_archive_without_train_and_test_lists_what_it_found(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "src"
    make_folder(src / "data", {"training": {"a": 1}, "testing": {"a": 1}})
    (src / "README").write_text("read me")
    archive = make_tar(src, tmp_path / "odd.tar.gz", None)
    with pytest.raises(DataError, match=r"has no train/ and test/ folders; found: README, data/") as info:
        dataset_identity(DatasetConfig(name="cifar10", root=str(archive)))
    assert str(archive) in info.value.message
    with pytest.raises(DataError, match="no train/ and test/"):
        load_dataset(DatasetConfig(name="image_folder", root=archive), cache_dir=cache)


def test_unknown_dataset_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownComponentError) as info:
        dataset_identity(DatasetConfig(name="cifar11"))
    assert info.value.suggestion == "cifar10"
    assert "digits" in (info.value.allowed or [])


def test_bad_roots_and_options_are_data_errors(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DataError, match="needs a root"):
        dataset_identity(DatasetConfig(name="image_folder"))
    not_archive = tmp_path / "images.npz"
    not_archive.write_bytes(b"x")
    with pytest.raises(DataError, match="not an archive"):
        dataset_identity(DatasetConfig(name="image_folder", root=not_archive))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"this is no zip file")
    with pytest.raises(DataError, match="cannot read archive"):
        dataset_identity(DatasetConfig(name="image_folder", root=broken))
    for options in ({"train_subset": 0}, {"train_subset": 1.5}, {"test_subset": "all"}, {"val_fraction": 1.0},
                    {"image_size": 0}, {"train_subset": True}):
        with pytest.raises(ValidationError):  # the request itself refuses them, before any data is read
            DatasetConfig(name="digits", **options)


def test_an_undecodable_image_names_its_file(two_class_folder, cache: Path) -> None:
    root, _ = two_class_folder
    (root / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        load_dataset(DatasetConfig(name="image_folder", root=root), cache_dir=cache)


def test_offline_torchvision_download_suggests_a_data_root(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    class Offline:
        """Behaves like a torchvision dataset class on a machine without internet."""

        def __init__(self, root: str, train: bool = True, download: bool = False):
            if download:
                raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    # Stands in for torchvision.datasets.CIFAR10 (importing torchvision costs seconds of the test budget).
    monkeypatch.setattr(cifar.Cifar10, "_torchvision_class", lambda self: Offline)
    with pytest.raises(DataError, match="could not download CIFAR10") as info:
        load_dataset(DatasetConfig(name="cifar10"), cache_dir=cache)
    assert "--data-root PATH" in str(info.value) and "dataset.root" in str(info.value)
    with pytest.raises(DataError, match="downloads are off"):
        load_dataset(DatasetConfig(name="cifar10", download=False), cache_dir=cache)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_torchvision_datasets_become_uint8_tensors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)

    class Local:
        """What torchvision's CIFAR10 (numpy [N,H,W,C], list targets) or MNIST ([N,H,W] tensor) holds."""

        classes = tuple(f"class{i}" for i in range(10))

        def __init__(self, root: str, train: bool = True, download: bool = False):
            n = 20 if train else 10
            shape = (n, 4, 4, 3) if name == "cifar10" else (n, 4, 4)
            self.data = rng.integers(0, 256, shape, dtype=np.uint8)
            if name == "mnist":
                self.data = torch.from_numpy(self.data)
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(type(DATASETS.get(name)()), "_torchvision_class", lambda self: Local)
    monkeypatch.setitem(mnist.SYSTEM_ROOTS, "mnist", ())
    data = load_dataset(DatasetConfig(name=name, download=False), cache_dir=tmp_path)
    assert data.identity == f"{name}:torchvision"
    assert data.train_x.shape == ((20, 3, 4, 4) if name == "cifar10" else (20, 1, 4, 4))
    assert data.train_x.dtype == torch.uint8 and data.train_x.is_contiguous()
    assert data.test_y.dtype == torch.int64 and data.test_y.tolist() == list(range(10))
    assert data.classes == (Local.classes if name == "cifar10" else tuple(str(d) for d in range(10)))


# ---------------------------------------------------------------------------------------------------------------
# The tensor cache


def test_second_load_reads_the_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    first = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    assert len(list(cache.glob("digits-*.pt"))) == 1

    def refuse(*args: object, **kwargs: object) -> ImageData:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(digits.Digits, "decode", refuse)
    second = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    assert same_tensors(first, second) and second.identity == first.identity and second.mean == first.mean


def test_a_corrupt_cache_is_rebuilt(cache: Path) -> None:
    first = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    (path,) = cache.glob("digits-*.pt")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="cache"):
        rebuilt = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    assert same_tensors(first, rebuilt)
    assert not list(cache.glob("*.tmp"))
    assert same_tensors(first, load_dataset(DatasetConfig(name="digits"), cache_dir=cache))


def test_the_cache_key_includes_the_decode_size(two_class_folder, cache: Path) -> None:
    root, _ = two_class_folder
    load_dataset(DatasetConfig(name="image_folder", root=root), cache_dir=cache)
    load_dataset(DatasetConfig(name="image_folder", root=root, image_size=5), cache_dir=cache)
    assert len(list(cache.glob("image_folder-*.pt"))) == 2


# ---------------------------------------------------------------------------------------------------------------
# Subsets and the validation split


def test_int_and_fraction_subsets_keep_the_class_balance(cache: Path) -> None:
    full = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    data = load_dataset(DatasetConfig(name="digits", train_subset=500, test_subset=0.5), cache_dir=cache)
    assert len(data.train_y) == 500 and len(data.test_y) == round(0.5 * len(full.test_y))
    for sub, whole in ((data.train_y, full.train_y), (data.test_y, full.test_y)):
        share = torch.bincount(whole, minlength=10) * len(sub) / len(whole)
        assert torch.all((torch.bincount(sub, minlength=10) - share).abs() < 1)
    assert data.identity == "digits:sklearn|train=500|test=0.5"


def test_subset_images_are_a_subset_of_the_split(cache: Path) -> None:
    full = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    data = load_dataset(DatasetConfig(name="digits", train_subset=50), cache_dir=cache)
    rows = {tuple(r) for r in full.train_x.flatten(1).tolist()}
    assert all(tuple(r) in rows for r in data.train_x.flatten(1).tolist())


def test_validation_split_is_stratified_and_disjoint(cache: Path) -> None:
    data = load_dataset(DatasetConfig(name="digits", val_fraction=0.2), cache_dir=cache)
    assert data.val_x is not None and data.val_y is not None
    assert len(data.val_y) == round(0.2 * 1438) and len(data.train_y) == 1438 - len(data.val_y)
    assert torch.bincount(data.val_y, minlength=10).min() >= 25
    assert data.val_x.dtype == torch.uint8 and data.val_y.dtype == torch.int64
    train_rows = {tuple(r) for r in torch.cat([data.train_x.flatten(1), data.train_y[:, None]], 1).tolist()}
    val_rows = [tuple(r) for r in torch.cat([data.val_x.flatten(1), data.val_y[:, None]], 1).tolist()]
    assert sum(r in train_rows for r in val_rows) < 5  # the 8x8 digits hold a few exact duplicates
    pixels = data.train_x.to(torch.float64) / 255
    assert data.mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist())  # stats of the final training split


def test_subsets_are_deterministic(cache: Path) -> None:
    request = DatasetConfig(name="digits", train_subset=300, test_subset=100, val_fraction=0.1)
    a = load_dataset(request, cache_dir=cache)
    b = load_dataset(request, cache_dir=cache)
    assert same_tensors(a, b, TENSORS + ("val_x", "val_y"))
    assert a.identity == "digits:sklearn|train=300|test=100|val=0.1"


def test_identity_changes_with_every_option_and_matches_dataset_identity(cache: Path) -> None:
    variants = [{}, {"train_subset": 100}, {"train_subset": 0.5}, {"test_subset": 50}, {"val_fraction": 0.1},
                {"image_size": 12}, {"train_subset": 100, "image_size": 12}]
    identities = []
    for options in variants:
        loaded = load_dataset(DatasetConfig(name="digits", **options), cache_dir=cache).identity
        assert loaded == dataset_identity(DatasetConfig(name="digits", **options))
        identities.append(loaded)
    assert len(set(identities)) == len(identities)
    assert identities[0] == "digits:sklearn"  # no option set: the source alone


def test_too_large_a_subset_is_a_data_error(cache: Path) -> None:
    with pytest.raises(DataError, match="only 1438 images"):
        load_dataset(DatasetConfig(name="digits", train_subset=5000), cache_dir=cache)


def test_a_data_error_points_at_the_option_it_names(write_suite, cache: Path) -> None:
    from lossbench.data.request import DataRequest, located_data_error
    from lossbench.suite import load_suite

    suite = load_suite(write_suite(TINY_SUITE.replace("train_subset: 400", "train_subset: 10\n  val_fraction: 0.95")))
    with pytest.raises(DataError) as caught:
        DataRequest.from_suite(suite, cache).load()
    assert caught.value.option == "val_fraction"
    assert "suite.yaml:5:3 at dataset.val_fraction: val_fraction = 0.95 of 10 training images leaves none" in (
        located_data_error(suite, caught.value).render())
    unnamed = located_data_error(suite, DataError("the data itself"))  # no option: the name, as no root is set
    assert str(unnamed.location).endswith("at dataset.name")


# ---------------------------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path: Path, cache: Path) -> None:
    arrays = make_idx_set(tmp_path / "fashion-mnist")
    data = load_dataset(DatasetConfig(name="fashion_mnist", root=str(tmp_path / "fashion-mnist")), cache_dir=cache)
    assert data.classes[0] == "T-shirt/top" and data.num_classes == 10
    assert torch.equal(data.train_x, torch.from_numpy(arrays["train-images-idx3-ubyte.gz"]).unsqueeze(1))
    assert torch.equal(data.test_y, torch.arange(10))
    assert data.train_x.shape == (30, 1, 5, 6) and data.train_y.dtype == torch.int64
    assert data.identity.startswith("fashion_mnist:idx:")


def test_fashion_mnist_from_a_system_root_without_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path
) -> None:
    system = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    arrays = make_idx_set(system)
    monkeypatch.setitem(mnist.SYSTEM_ROOTS, "fashion_mnist", (tmp_path / "absent", system))
    data = load_dataset(DatasetConfig(name="fashion_mnist", download=False), cache_dir=cache)
    assert torch.equal(data.test_x, torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"]).unsqueeze(1))
    from_system = dataset_identity(DatasetConfig(name="fashion_mnist"))
    assert from_system == dataset_identity(DatasetConfig(name="fashion_mnist", root=system))


def test_torchvision_raw_layout_is_found(tmp_path: Path, cache: Path) -> None:
    make_idx_set(tmp_path / "tv" / "MNIST" / "raw")
    data = load_dataset(DatasetConfig(name="mnist", root=tmp_path / "tv"), cache_dir=cache)
    assert data.classes == tuple(str(d) for d in range(10)) and len(data.train_y) == 30


def test_partial_idx_sets_and_bad_files_are_data_errors(tmp_path: Path, cache: Path) -> None:
    folder = tmp_path / "partial"
    make_idx_set(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing: t10k-labels"):
        dataset_identity(DatasetConfig(name="mnist", root=folder))
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    truncated = tmp_path / "short-idx1-ubyte"
    truncated.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="holds 2 data bytes"):
        read_idx(truncated)


def test_the_official_release_is_named_like_a_torchvision_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / "fashion"
    arrays = make_idx_set(folder)
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    # Checksums are of the content, so a re-gzipped or uncompressed copy is recognized too.
    content_md5 = []
    for name in names:
        header = bytes([0, 0, 8, arrays[name].ndim]) + np.asarray(arrays[name].shape, dtype=">u4").tobytes()
        content_md5.append(hashlib.md5(header + arrays[name].tobytes()).hexdigest())
    monkeypatch.setattr(mnist.FashionMnist, "official_md5", tuple(content_md5))
    assert dataset_identity(DatasetConfig(name="fashion_mnist", root=folder)) == "fashion_mnist:torchvision"
    monkeypatch.setitem(mnist.SYSTEM_ROOTS, "fashion_mnist", ())  # nothing local: a download is planned
    planned = dataset_identity(DatasetConfig(name="fashion_mnist", train_subset=10))
    assert planned == "fashion_mnist:torchvision|train=10"
    monkeypatch.setattr(mnist.Mnist, "other_md5", (("fashion_mnist", tuple(content_md5)),))
    with pytest.raises(DataError, match="official 'fashion_mnist' files"):
        dataset_identity(DatasetConfig(name="mnist", root=folder))


@pytest.mark.slow
def test_digits_match_sklearn_load_digits(cache: Path) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_dataset(DatasetConfig(name="digits"), cache_dir=cache)
    both = torch.cat([data.train_x, data.test_x]).flatten(1).to(torch.float64)
    expected = torch.from_numpy(np.floor(bunch.data * 255 / 16 + 0.5))
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, expected.tolist()))
    assert torch.equal(torch.cat([data.train_y, data.test_y]).bincount(), torch.from_numpy(bunch.target).bincount())
