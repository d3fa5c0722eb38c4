"""Image-folder readers are bounded and honest: no symlink loops, size limits checked before reading or
decoding, and `validate` finds bad images, empty and single classes from headers, naming the files."""

from __future__ import annotations

import io
import os
import resource
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lossbench.config.dataset import DatasetConfig
from lossbench.cli import app
from lossbench.data import load_dataset
from lossbench.data.folder import check_folder_images, read_folder
from lossbench.data.folder_files import MAX_IMAGE_FILE_BYTES
from lossbench.data.folder_images import MAX_IMAGE_PIXELS
from lossbench.errors import DataError


def png(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def folder(root: Path, classes: dict[str, int] | None = None) -> Path:
    """train/ and test/ with `classes` (name → images per split) of 8×8 PNGs."""
    classes = classes or {"a": 3, "b": 3}
    for split in ("train", "test"):
        for label, count in classes.items():
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (d / f"{i}.png").write_bytes(png(hash((split, label, i)) % 1000))
    return root


def test_a_symlink_cycle_is_an_error_naming_the_link(tmp_path: Path) -> None:
    root = folder(tmp_path / "data")
    os.symlink("..", root / "train" / "a" / "loop")
    for check in (check_folder_images, read_folder):
        with pytest.raises(DataError) as caught:
            check(root)
        text = caught.value.render()
        assert "train/a/loop leads back to train (a symbolic-link cycle)" in text


def test_a_second_link_into_the_dataset_is_an_error(tmp_path: Path) -> None:
    root = folder(tmp_path / "data")
    os.symlink(root / "train" / "b", root / "train" / "a" / "b_again")
    with pytest.raises(DataError, match="train/a/b_again and train/b are the same directory"):
        read_folder(root)


def test_links_to_images_outside_the_folder_are_followed(tmp_path: Path) -> None:
    outside = folder(tmp_path / "elsewhere", {"c": 2})
    root = folder(tmp_path / "data")
    os.symlink(outside / "train" / "c", root / "train" / "c")
    classes, splits = read_folder(root)
    assert classes == ("a", "b", "c")
    assert splits["train"][1].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_a_huge_zip_member_fails_fast_without_reading_it(tmp_path: Path) -> None:
    """A ~1 MB zip whose member inflates to 1 GiB: refused from the member's header, without inflating it."""
    src = folder(tmp_path / "src")
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, p.relative_to(src).as_posix())
        with zf.open("train/a/huge.png", "w", force_zip64=True) as member:
            zeros = bytes(2**24)
            for _ in range(64):  # 64 × 16 MiB = 1 GiB of zeros
                member.write(zeros)
    assert archive.stat().st_size < 2 * 2**20
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.process_time()
    with pytest.raises(DataError, match=r"train/a/huge.png holds 1,073,741,824 bytes, over the limit"):
        read_folder(archive)
    # Fails from the header: far less CPU than inflating 1 GiB, and no 1 GiB allocation.
    assert time.process_time() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 256 * 1024


def test_a_huge_tar_member_fails_before_it_is_read(tmp_path: Path) -> None:
    archive = tmp_path / "big.tar.gz"
    src = folder(tmp_path / "src")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "train", arcname="train")
        tar.add(src / "test", arcname="test")
        info = tarfile.TarInfo("train/a/huge.png")
        info.size = MAX_IMAGE_FILE_BYTES + 1
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(DataError, match="train/a/huge.png holds .* bytes, over the limit"):
        read_folder(archive)


def test_an_image_with_too_many_pixels_is_refused_from_its_header(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import lossbench.data.folder_images as folder_images

    root = folder(tmp_path / "data")
    (root / "train" / "a" / "big.png").write_bytes(png(1, size=64))
    monkeypatch.setattr(folder_images, "MAX_IMAGE_PIXELS", 32 * 32)
    with pytest.raises(DataError) as caught:
        read_folder(root)
    assert "train/a/big.png: 64×64 pixels, over the limit of 1,024 pixels per image" in caught.value.render()
    assert MAX_IMAGE_PIXELS == 8192 * 8192


def test_bad_images_are_all_named_with_a_count_and_no_object_reprs(tmp_path: Path) -> None:
    root = folder(tmp_path / "data", {"a": 4, "b": 4})
    for i in range(4):
        (root / "train" / "a" / f"{i}.png").write_bytes(b"not an image at all")
    (root / "test" / "b" / "0.png").write_bytes(png(3)[:60])  # a valid header, a truncated body
    (root / "train" / "b" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    with pytest.raises(DataError) as header:
        check_folder_images(root)
    text = header.value.render()
    assert "5 of 17 image file(s) cannot be used" in text
    assert "train/a/0.png: not an image Pillow can read" in text and "… and 0 more" not in text
    assert "object at 0x" not in text
    # A full decode also finds the truncated one, and names six with a count.
    with pytest.raises(DataError) as decoded:
        read_folder(root)
    text = decoded.value.render()
    assert "6 of 17 image file(s) cannot be used" in text and "… and 1 more" in text
    assert "object at 0x" not in text and "BytesIO" not in text


@pytest.mark.parametrize("layout, message", [
    ({"a": 2, "b": 2, "empty": 0}, "1 class folder(s) of train/ hold no images: train/empty/"),
    ({"only": 3}, "train/ has a single class (only); a classifier needs at least two"),
])
def test_empty_and_single_classes_are_errors(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    root = folder(tmp_path / "data", layout)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_folder(root)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "test", arcname="test")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_folder_images(archive)


def test_validate_checks_image_headers(tmp_path: Path) -> None:
    root = folder(tmp_path / "data")
    (root / "train" / "b" / "1.png").write_bytes(b"garbage")
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: x\ndataset: {{name: image_folder, root: '{root}'}}\nmodel: {{name: small_cnn}}\n"
                     "train: {device: cpu}\ngrid: {loss: [cross_entropy]}\n")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "1 of 12 image file(s) cannot be used" in text and "train/b/1.png: not an image Pillow can read" in text
    assert "Traceback" not in text
    (root / "train" / "b" / "1.png").write_bytes(png(9))
    assert CliRunner().invoke(app, ["validate", str(suite)]).exit_code == 0


def test_a_truncated_archive_says_so(tmp_path: Path, cache_dir: Path) -> None:
    src = folder(tmp_path / "src", {"a": 30, "b": 30})
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "train", arcname="train")
        tar.add(src / "test", arcname="test")
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(DatasetConfig(name="image_folder", root=archive), cache_dir=cache_dir)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height RGB pixels, with one tiny (invalid) data chunk: what a
    decompression bomb looks like to a reader that trusts the header."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (len(body).to_bytes(4, "big") + kind + body
                + zlib.crc32(kind + body).to_bytes(4, "big"))

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_the_decoded_pixels_of_a_dataset_are_bounded_in_total(tmp_path: Path) -> None:
    """A hundred images each within the per-image limit, 8192×8192 by their headers: ~6.7e9 pixels (20 GB as RGB)
    from a few KB of archive. Refused from the headers, by validate and by the reader, naming the limit."""
    from lossbench.data.folder_images import MAX_DATASET_PIXELS

    archive = tmp_path / "bomb.tar.gz"
    src = folder(tmp_path / "src")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "test", arcname="test")
        tar.add(src / "train", arcname="train")
        for i in range(100):
            data = png_header(8192, 8192)
            info = tarfile.TarInfo(f"train/a/big{i:03d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert archive.stat().st_size < 30_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for check in (check_folder_images, read_folder):
        with pytest.raises(DataError) as caught:
            check(archive)
        text = caught.value.render()
        assert f"over the limit of {MAX_DATASET_PIXELS:,} decoded pixels per dataset" in text, text
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 256 * 1024


def test_an_image_folder_resized_beyond_memory_is_refused_before_decoding(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import lossbench.data.bounds as bounds

    root = folder(tmp_path / "data", {"a": 20, "b": 20})
    monkeypatch.setattr(bounds, "physical_memory_bytes", lambda: 2 * 2**20)  # a 2 MiB machine: 1 MiB for images
    with pytest.raises(DataError, match=r"would take .* of memory, over the limit of 1\.0 MiB"):
        read_folder(root, image_size=128)  # 80 images × 3 × 128² = 3.75 MiB
    read_folder(root, image_size=16)


def idx_bytes(shape: tuple[int, ...], body: bytes = b"", type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + body


def idx_folder(root: Path, train_images: bytes, *, gz: bool = False, train_count: int = 2) -> Path:
    import gzip

    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": idx_bytes((train_count,), bytes(train_count)),
        "t10k-images-idx3-ubyte": idx_bytes((2, 28, 28), bytes(2 * 784)),
        "t10k-labels-idx1-ubyte": idx_bytes((2,), bytes([0, 1])),
    }
    for name, data in files.items():
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9))
        else:
            (root / name).write_bytes(data)
    return root


def test_a_gzipped_idx_bomb_is_refused_from_its_header(tmp_path: Path, cache_dir: Path) -> None:
    """A header that declares 2 GiB of images, then 64 MiB of zeros gzipped to a few dozen KB: refused from the
    header before the file is decompressed, by validate's identity and by the loader, naming the limit."""
    import gzip

    from lossbench.data.idx import MAX_IDX_BYTES
    from lossbench.data.load import dataset_identity

    root = tmp_path / "kmnist"
    idx_folder(root, b"", gz=True, train_count=2)
    (root / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes((2 * 2**30 // 784, 28, 28), bytes(64 * 2**20)), compresslevel=9))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for call in (lambda: dataset_identity(DatasetConfig(name="kmnist", root=root)),
                 lambda: load_dataset(DatasetConfig(name="kmnist", root=root), cache_dir=cache_dir)):
        with pytest.raises(DataError) as caught:
            call()
        text = caught.value.render()
        assert f"over the limit of {MAX_IDX_BYTES:,} bytes per IDX file" in text, text
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 32 * 1024


def test_an_idx_header_whose_size_overflows_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    from lossbench.data.load import dataset_identity

    root = idx_folder(tmp_path / "kmnist", idx_bytes((4194304, 4194304, 4194304), bytes(784)))
    for call in (lambda: dataset_identity(DatasetConfig(name="kmnist", root=root)),
                 lambda: load_dataset(DatasetConfig(name="kmnist", root=root), cache_dir=cache_dir)):
        with pytest.raises(DataError, match=r"4194304×4194304×4194304 uint8 values, .* over the limit"):
            call()


def test_a_dataset_without_training_images_is_an_error(tmp_path: Path, cache_dir: Path) -> None:
    from lossbench.data.load import dataset_identity

    root = idx_folder(tmp_path / "kmnist", idx_bytes((0, 28, 28)), train_count=0)
    for call in (lambda: dataset_identity(DatasetConfig(name="kmnist", root=root)),
                 lambda: load_dataset(DatasetConfig(name="kmnist", root=root), cache_dir=cache_dir)):
        with pytest.raises(DataError, match="train-images-idx3-ubyte holds no images"):
            call()


def test_cifar_resized_beyond_memory_is_refused_by_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lossbench.data.bounds as bounds

    monkeypatch.setattr(bounds, "physical_memory_bytes", lambda: 64 * 2**30)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: x\ndataset:\n  name: cifar10\n  image_size: 1024\nmodel: {name: small_cnn}\n"
                     "train: {device: cpu}\ngrid: {loss: [cross_entropy]}\n")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    # 60,000 images × 3 × 1024² bytes
    assert "suite.yaml:4:3 at dataset.image_size" in text and "175.8 GiB of memory, over the limit of 32.0 GiB" in text
    assert "Traceback" not in text
    result = CliRunner().invoke(app, ["validate", str(suite), "dataset.image_size=64", "dataset.train_subset=0.1"])
    assert result.exit_code == 0, result.output
