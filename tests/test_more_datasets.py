"""SVHN, STL-10, KMNIST and EMNIST read from tiny files in torchvision's own formats, and their noise mappings."""

from __future__ import annotations

import gzip
import string
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from lossbench.config.dataset import DatasetConfig
from lossbench.config.source import SuiteSource
from lossbench.suite import parse_suite
from lossbench.data import DATASETS, dataset_identity, load_dataset
from lossbench.data.scenarios import SCENARIOS, ScenarioSet
from lossbench.data.stl10 import DEFAULT_CLASSES
from lossbench.errors import DataError, SuiteErrors


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An IDX file of uint8 values: magic 0,0,0x08,rank, big-endian dims, then the bytes (gzipped or not)."""
    raw = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def write_svhn(root: Path, counts: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`<split>_32x32.mat` files as SVHN ships them: X [32, 32, 3, N] uint8, y [N, 1] with 10 for the digit 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in counts.items():
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = (x, y)
    return written


def test_the_new_datasets_are_registered() -> None:
    assert {"svhn", "stl10", "kmnist", "emnist"} <= set(DATASETS.names())


def test_svhn_from_mat_files(tmp_path: Path) -> None:
    written = write_svhn(tmp_path / "svhn", {"train": 20, "test": 10})
    data = load_dataset(DatasetConfig(name="svhn", root=tmp_path / "svhn"), cache_dir=tmp_path / "cache")
    x, y = written["train"]
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_x.dtype == torch.uint8
    # Pixel (row 5, column 7, channel 2) of image 3 as the .mat stores it: X[5, 7, 2, 3].
    assert int(data.train_x[3, 2, 5, 7]) == int(x[5, 7, 2, 3])
    assert torch.equal(data.train_x, torch.from_numpy(x).permute(3, 2, 0, 1))
    assert data.train_y.tolist() == [int(v) % 10 for v in y[:, 0]]  # label 10 is the digit 0
    assert data.classes == tuple(string.digits) and data.test_y.shape == (10,)
    assert data.identity.startswith("svhn:mat:")


def test_svhn_extra_joins_the_training_split_and_names_itself(tmp_path: Path) -> None:
    root = tmp_path / "svhn"
    written = write_svhn(root, {"train": 20, "test": 10, "extra": 30})
    data = load_dataset(DatasetConfig(name="svhn", root=root, extra=True), cache_dir=tmp_path / "cache")
    assert len(data.train_y) == 50 and len(data.test_y) == 10
    assert torch.equal(data.train_x[20:], torch.from_numpy(written["extra"][0]).permute(3, 2, 0, 1))
    plain = dataset_identity(DatasetConfig(name="svhn", root=root))
    with_extra = dataset_identity(DatasetConfig(name="svhn", root=root, extra=True))
    assert with_extra.startswith("svhn:train+extra:mat:") and with_extra != plain.replace("svhn:", "svhn:train+extra:")
    (root / "extra_32x32.mat").unlink()
    with pytest.raises(DataError, match="missing: extra_32x32.mat"):
        dataset_identity(DatasetConfig(name="svhn", root=root, extra=True))


def test_svhn_rejects_labels_outside_1_to_10(tmp_path: Path) -> None:
    root = tmp_path / "svhn"
    write_svhn(root, {"train": 4, "test": 2})
    scipy.io.savemat(root / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataError, match="labels outside 1..10"):
        load_dataset(DatasetConfig(name="svhn", root=root), cache_dir=tmp_path / "cache")


def write_stl10(directory: Path, counts: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`stl10_binary/` as STL-10 ships it: each image as 3 planes of 96x96 stored column-major; labels 1..10."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    upright = {}
    for split, n in counts.items():
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # [N, C, row, column]
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        (directory / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        (directory / f"{split}_y.bin").write_bytes(labels.tobytes())
        upright[split] = (images, labels)
    return upright


def test_stl10_from_its_binary_files(tmp_path: Path) -> None:
    written = write_stl10(tmp_path / "tv" / "stl10_binary", {"train": 12, "test": 5})
    (tmp_path / "tv" / "stl10_binary" / "class_names.txt").write_text("\n".join(DEFAULT_CLASSES) + "\n")
    data = load_dataset(DatasetConfig(name="stl10", root=tmp_path / "tv"), cache_dir=tmp_path / "cache")
    assert data.train_x.shape == (12, 3, 96, 96) and data.image_size == (96, 96)
    assert torch.equal(data.train_x, torch.from_numpy(written["train"][0]))
    # The first bytes of the file are the first column of the red plane of image 0: rows 0, 1, 2 at column 0.
    first = np.fromfile(tmp_path / "tv" / "stl10_binary" / "train_X.bin", dtype=np.uint8, count=3)
    assert data.train_x[0, 0, :3, 0].tolist() == first.tolist()
    assert data.train_y.tolist() == [i % 10 for i in range(12)] and data.classes == DEFAULT_CLASSES
    assert data.identity.startswith("stl10:bin:")
    assert dataset_identity(DatasetConfig(name="stl10", root=tmp_path / "tv" / "stl10_binary")) == data.identity


def test_stl10_with_a_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    directory = tmp_path / "stl10_binary"
    write_stl10(directory, {"train": 2, "test": 2})
    (directory / "test_X.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="not a whole number of 3x96x96 images"):
        load_dataset(DatasetConfig(name="stl10", root=directory), cache_dir=tmp_path / "cache")


def test_kmnist_from_torchvision_raw_files(tmp_path: Path) -> None:
    raw = tmp_path / "tv" / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte.gz", train)
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), compress=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10), compress=False)
    data = load_dataset(DatasetConfig(name="kmnist", root=tmp_path / "tv"), cache_dir=tmp_path / "cache")
    assert torch.equal(data.train_x, torch.from_numpy(train).unsqueeze(1))
    assert data.classes == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert data.identity.startswith("kmnist:idx:")


def write_emnist(raw: Path, split: str, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    stored = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    for part in ("train", "test"):
        write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", stored, compress=False)
        write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", labels, compress=False)
    return stored


def test_emnist_letters_are_upright_and_labelled_from_zero(tmp_path: Path) -> None:
    stored = write_emnist(tmp_path / "tv" / "EMNIST" / "raw", "letters", np.arange(1, 27))
    data = load_dataset(DatasetConfig(name="emnist", root=tmp_path / "tv", split="letters"),
                        cache_dir=tmp_path / "cache")
    assert data.classes == tuple(string.ascii_lowercase)
    assert data.train_y.tolist() == list(range(26))
    # The files store each image transposed: pixel (row r, column c) of the character is stored at [c, r].
    assert int(data.train_x[4, 0, 3, 17]) == int(stored[4, 17, 3])
    assert data.identity.startswith("emnist:letters:idx:")


@pytest.mark.parametrize(("split", "count", "sample"), [
    ("byclass", 62, {0: "0", 10: "A", 36: "a", 61: "z"}),
    ("balanced", 47, {10: "A", 36: "a", 37: "b", 46: "t"}),
    ("digits", 10, {9: "9"}),
])
def test_emnist_splits_have_torchvisions_classes(tmp_path: Path, split: str, count: int, sample: dict) -> None:
    write_emnist(tmp_path / split, split, np.arange(count))
    data = load_dataset(DatasetConfig(name="emnist", root=tmp_path / split, split=split), cache_dir=tmp_path / "cache")
    assert data.num_classes == count and all(data.classes[i] == name for i, name in sample.items())


def test_emnist_split_is_part_of_the_identity_and_its_files_are_per_split(tmp_path: Path) -> None:
    write_emnist(tmp_path / "e", "digits", np.arange(10))
    digits = dataset_identity(DatasetConfig(name="emnist", root=tmp_path / "e", split="digits"))
    assert digits.startswith("emnist:digits:")
    # Only the digits files are there: the balanced split finds none and reads the folder as an image folder.
    with pytest.raises(DataError):
        load_dataset(DatasetConfig(name="emnist", root=tmp_path / "e", split="balanced"), cache_dir=tmp_path / "cache")
    with pytest.raises(Exception, match="split"):
        dataset_identity(DatasetConfig(name="emnist", root=tmp_path / "e", split="lettres"))


def suite_source(dataset: dict) -> SuiteSource:
    data = {"name": "s", "dataset": dataset, "grid": {"loss": ["cross_entropy"]}}
    return SuiteSource(data, "suite.yaml", {})


def test_source_parameters_are_validated_with_the_suite() -> None:
    suite = parse_suite(suite_source({"name": "emnist", "split": "letters"}))
    assert suite.dataset.source_params == {"split": "letters"}
    with pytest.raises(SuiteErrors) as info:
        parse_suite(suite_source({"name": "emnist", "splt": "letters"}))
    error = info.value.errors[0]
    assert "unknown key 'splt'" in error.message and error.suggestion == "split"
    with pytest.raises(SuiteErrors) as info:
        parse_suite(suite_source({"name": "svhn", "extra": "maybe"}))
    assert "extra" in info.value.errors[0].message
    with pytest.raises(SuiteErrors) as info:
        parse_suite(suite_source({"name": "cifar10", "split": "letters"}))
    assert "unknown key 'split'" in info.value.errors[0].message


def flips(dataset: str, classes: tuple[str, ...]) -> set[tuple[str, str]]:
    labels = np.repeat(np.arange(len(classes)), 20)
    scenarios = ScenarioSet([SCENARIOS.build("label_noise", {"rate": 0.5, "kind": "asymmetric"})])
    out = scenarios.split(labels, classes, dataset, 0)
    return {(classes[a], classes[b]) for a, b in zip(labels, out.labels) if a != b}


def test_asymmetric_noise_mappings_of_the_new_datasets() -> None:
    digit_flips = {("2", "7"), ("3", "8"), ("5", "6"), ("6", "5"), ("7", "1")}
    assert flips("svhn", tuple(string.digits)) == digit_flips
    assert flips("emnist", tuple(string.digits)) == digit_flips
    assert flips("stl10", DEFAULT_CLASSES) == {("truck", "car"), ("bird", "airplane"), ("deer", "horse"),
                                               ("cat", "dog"), ("dog", "cat")}
    kmnist = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert flips("kmnist", kmnist) == {(kmnist[i], kmnist[(i + 1) % 10]) for i in range(10)}  # pair flip


@pytest.mark.parametrize("name", ["svhn", "stl10", "emnist"])
def test_without_files_and_with_downloads_off_the_error_says_what_to_do(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="downloads are off"):
        load_dataset(DatasetConfig(name=name, download=False), cache_dir=tmp_path / "cache")


def test_class_names_agree_with_torchvisions_datasets() -> None:
    import torchvision.datasets

    from lossbench.data.mnist import EMNIST_CLASSES, Kmnist

    for split, names in torchvision.datasets.EMNIST.classes_split_dict.items():
        # torchvision keeps the unused label 0 of `letters` as "N/A"; lossbench shifts the letters down to 0.
        expected = tuple(names[1:]) if split == "letters" else tuple(names)
        assert EMNIST_CLASSES[split] == expected, split
    assert Kmnist.class_names == tuple(torchvision.datasets.KMNIST.classes)


def write_kmnist(raw: Path) -> None:
    """Torchvision's KMNIST/raw IDX files with a few 28x28 images."""
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for prefix, n in (("train", 20), ("t10k", 10)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, False)


def test_the_new_datasets_declare_their_shape_without_decoding(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench.data.base import ImageShape
    from lossbench.data.load import known_image_shape

    for name in ("svhn", "stl10", "kmnist", "emnist"):
        monkeypatch.setattr(DATASETS.get(name), "decode", lambda *a, **k: pytest.fail("decoded the dataset"))
    write_svhn(tmp_path / "svhn", {"train": 4, "test": 2})
    write_stl10(tmp_path / "stl" / "stl10_binary", {"train": 2, "test": 1})
    write_kmnist(tmp_path / "k" / "KMNIST" / "raw")
    write_emnist(tmp_path / "e" / "EMNIST" / "raw", "letters", np.arange(4) % 26 + 1)
    assert known_image_shape(DatasetConfig(name="svhn", root=tmp_path / "svhn")) == ImageShape(3, 32, 32, 10)
    assert known_image_shape(DatasetConfig(name="svhn", extra=True)) == ImageShape(3, 32, 32, 10)
    assert known_image_shape(DatasetConfig(name="stl10", root=tmp_path / "stl")) == ImageShape(3, 96, 96, 10)
    assert known_image_shape(DatasetConfig(name="kmnist", root=tmp_path / "k")) == ImageShape(1, 28, 28, 10)
    letters = known_image_shape(DatasetConfig(name="emnist", root=tmp_path / "e", split="letters"))
    assert letters == ImageShape(1, 28, 28, 26)
    assert known_image_shape(DatasetConfig(name="emnist", split="byclass")) == ImageShape(1, 28, 28, 62)
    # dataset.image_size resizes every image: the shape follows it.
    resized = known_image_shape(DatasetConfig(name="stl10", root=tmp_path / "stl", image_size=40))
    assert resized == ImageShape(3, 40, 40, 10)
    # An image folder given as the root may hold any size: only decoding (or image_size) tells.
    folder = tmp_path / "folder"
    (folder / "train" / "a").mkdir(parents=True)
    (folder / "test" / "a").mkdir(parents=True)
    assert known_image_shape(DatasetConfig(name="svhn", root=folder)) is None
    assert known_image_shape(DatasetConfig(name="image_folder", root=folder)) is None
    resized = known_image_shape(DatasetConfig(name="image_folder", root=folder, image_size=12))
    assert resized is not None and (resized.height, resized.width) == (12, 12)


def validate(suite_text: str, tmp_path: Path) -> tuple[int, str]:
    from typer.testing import CliRunner

    from lossbench.cli import app

    path = tmp_path / "suite.yaml"
    path.write_text(suite_text, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, result.output


FIT_SUITE = """\
name: fit
dataset:
  name: {name}
  root: {root}
{extra}model:
  name: tutorial_cnn
  padding: valid
train: {{epochs: 1, batch_size: 8, device: cpu}}
seeds: [0]
grid:
  loss: [cross_entropy]
  regularizer: [none]
  augmentation: [none]
"""


def test_validate_refuses_a_model_too_small_for_kmnist_images_naming_model_padding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DATASETS.get("kmnist"), "decode", lambda *a, **k: pytest.fail("decoded the dataset"))
    write_kmnist(tmp_path / "k" / "KMNIST" / "raw")
    # 28x28 images fit three valid-padded conv blocks; resized to 16x16 they do not.
    code, output = validate(FIT_SUITE.format(name="kmnist", root=tmp_path / "k", extra=""), tmp_path)
    assert code == 0, output
    code, output = validate(FIT_SUITE.format(name="kmnist", root=tmp_path / "k", extra="  image_size: 16\n"),
                            tmp_path)
    assert code == 2, output
    assert "at model.padding" in output and "too small for valid padding" in output and "16×16" in output


def test_validate_refuses_a_model_too_small_for_an_image_folder_with_image_size(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "f" / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (20, 20)).save(tmp_path / "f" / split / cls / f"{i}.png")
    code, output = validate(FIT_SUITE.format(name="image_folder", root=tmp_path / "f", extra="  image_size: 12\n"),
                            tmp_path)
    assert code == 2, output
    assert "at model.padding" in output and "12×12" in output
    code, output = validate(FIT_SUITE.format(name="image_folder", root=tmp_path / "f", extra="  image_size: 24\n"),
                            tmp_path)
    assert code == 0, output


def test_stl10_class_names_that_are_not_utf8_are_a_data_error(tmp_path: Path) -> None:
    from lossbench.data.load import check_dataset_files
    from lossbench.errors import DataError

    write_stl10(tmp_path / "tv" / "stl10_binary", {"train": 2, "test": 2})
    names = tmp_path / "tv" / "stl10_binary" / "class_names.txt"
    names.write_bytes("\n".join(DEFAULT_CLASSES).encode("utf-16"))
    with pytest.raises(DataError, match=r"class_names.txt is not UTF-8 text \(byte 0xff at offset 0\)"):
        load_dataset(DatasetConfig(name="stl10", root=tmp_path / "tv"), cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="is not UTF-8 text"):  # what validate checks, without decoding
        check_dataset_files(DatasetConfig(name="stl10", root=tmp_path / "tv"))
