"""The slow checks of an image folder or archive (its layout, every image header) are remembered across runs
under the identity of the files, so a second `validate` skips them; any change to the files checks them again,
and a failed check is never remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossbench.data import folder
from lossbench.data.fingerprint import remembered_check
from lossbench.errors import DataError
from test_data import make_folder, make_tar


@pytest.fixture
def checks_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import lossbench.data.cache

    path = tmp_path / "cache"
    monkeypatch.setattr(lossbench.data.cache, "DEFAULT_CACHE", path)
    return path


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the slow checks that actually ran."""
    ran: list[str] = []
    real_images, real_prefix = folder._check_images, folder.find_prefix

    def images(path: Path) -> str:
        ran.append("images")
        return real_images(path)

    def prefix(path: Path, names, stop_early: bool = False) -> str:
        if stop_early:
            ran.append("layout")
        return real_prefix(path, names, stop_early)

    monkeypatch.setattr(folder, "_check_images", images)
    monkeypatch.setattr(folder, "find_prefix", prefix)
    monkeypatch.setattr(folder, "memoized_by_stat", lambda path, tag, compute: compute())  # no per-process memo
    return ran


def test_a_directory_is_checked_once_until_a_file_changes(tmp_path: Path, checks_cache: Path,
                                                          counted: list[str]) -> None:
    root = tmp_path / "pets"
    make_folder(root, {"train": {"dog": 2, "cat": 2}, "test": {"cat": 1, "dog": 1}})
    folder.check_folder_images(root)
    folder.check_folder_images(root)
    assert counted == ["images"]
    assert len(list((checks_cache / "checks").glob("*.json"))) == 1
    (root / "train" / "dog" / "000.png").write_bytes(b"not an image any more")
    for _ in range(2):  # a failure is not remembered: the error comes back every time
        with pytest.raises(DataError, match="1 of 6 image file"):
            folder.check_folder_images(root)
    assert counted == ["images", "images", "images"]


def test_a_new_image_changes_the_directory_key(tmp_path: Path, checks_cache: Path, counted: list[str]) -> None:
    root = tmp_path / "pets"
    make_folder(root, {"train": {"dog": 2, "cat": 2}, "test": {"cat": 1, "dog": 1}})
    key = folder.content_key(root)
    make_folder(root / "extra", {"x": {"y": 1}})  # outside train/ and test/: not part of the dataset
    assert folder.content_key(root) == key
    make_folder(root, {"train": {"dog": 3}}, seed=1)  # a third dog image
    assert folder.content_key(root) != key


def test_an_archive_is_listed_and_checked_once(tmp_path: Path, checks_cache: Path, counted: list[str]) -> None:
    src = tmp_path / "src"
    make_folder(src, {"train": {"dog": 2, "cat": 2}, "test": {"cat": 1, "dog": 1}})
    archive = make_tar(src, tmp_path / "pets.tar.gz", "pets")
    identity = folder.describe_folder(archive)
    folder.check_folder_images(archive)
    assert folder.describe_folder(archive) == identity
    folder.check_folder_images(archive)
    assert counted == ["layout", "images"]


def test_the_memory_budget_is_checked_even_when_the_headers_are_remembered(
        tmp_path: Path, checks_cache: Path, counted: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import lossbench.data.bounds

    root = tmp_path / "pets"
    make_folder(root, {"train": {"dog": 2, "cat": 2}, "test": {"cat": 1, "dog": 1}})
    folder.check_folder_images(root)
    monkeypatch.setattr(lossbench.data.bounds, "memory_budget_bytes", lambda: 10)  # a much smaller machine
    with pytest.raises(DataError, match="over the limit"):
        folder.check_folder_images(root)
    assert counted == ["images"]


def test_an_unwritable_cache_only_costs_speed(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would go")
    calls = []
    for _ in range(2):
        assert remembered_check("k", lambda: calls.append(1) or "v", cache_dir=blocked) == "v"
    assert len(calls) == 2
