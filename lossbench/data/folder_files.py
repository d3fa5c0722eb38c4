"""The files of an image-folder dataset: its listing, its layout and the bytes of its images.

An image folder is `train/<class>/*` and `test/<class>/*` in a directory or an archive; the two split folders may
sit at the top or under one top-level folder (`cifar10/train/airplane/0001.jpg`), as archives usually wrap their
content. `find_prefix` finds that layout, `build_tree` checks a full listing (class folders, unknown test
classes) and picks out its images, `read_files` reads a directory or archive once, front to back.

An image file may hold at most `MAX_IMAGE_FILE_BYTES` (as stored, or decompressed from an archive, per the
member's header): a bigger one is an error before it is read. A directory walk follows symbolic links but never
reaches a directory twice: a link cycle (`train/a/loop -> ..`) is an error naming the link.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lossbench.data.bounds import check_root_kind
from lossbench.errors import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "test")
_EXPECTED = "expected train/<class>/<image> and test/<class>/<image>, optionally under one top-level folder"
#: Largest image file read, in bytes (64 MiB): a bigger member of an archive is an error before it is read.
MAX_IMAGE_FILE_BYTES = 64 * 2**20
#: How many bad files an error names before it gives only their count.
SHOWN = 5


def is_archive(path: Path) -> bool:
    """Whether `path` names an archive format an image folder may come in."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


class ImageEntry(NamedTuple):
    """One image file of a folder dataset: split, class folder, path inside the root, size in bytes."""

    split: str
    label: str
    member: str
    size: int


@dataclass(frozen=True)
class FolderTree:
    """The full listing of an image-folder dataset: its classes (sorted) and image files (sorted)."""

    path: Path
    prefix: str
    classes: tuple[str, ...]
    images: tuple[ImageEntry, ...]


def check_root(path: Path) -> None:
    check_root_kind(path)  # a FIFO named x.tar.gz would block tarfile's first read forever
    if not path.exists():
        raise DataError(f"dataset root {path} does not exist", details=[_EXPECTED])
    if path.is_file() and not is_archive(path):
        raise DataError(
            f"dataset root {path} is a file but not an archive",
            details=[f"expected a directory or one of {', '.join(ARCHIVE_SUFFIXES)}; {_EXPECTED}"],
        )


def build_tree(path: Path, files: list[tuple[str, int]]) -> FolderTree:
    """Check the layout of a full listing and pick out its images."""
    prefix = find_prefix(path, (name for name, _ in files))
    images: list[ImageEntry] = []
    folders: set[str] = set()  # class folders of train/, images or not
    for name, size in files:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split("/")
        if len(parts) >= 3 and parts[0] == "train" and not parts[1].startswith("."):
            folders.add(parts[1])
        if len(parts) < 2 or parts[0] not in SPLITS or not _is_image(name):
            continue
        if len(parts) == 2:
            raise DataError(
                f"{path}: image {name} sits directly in {prefix}{parts[0]}/; images must be in class folders",
                details=[_EXPECTED],
            )
        images.append(ImageEntry(parts[0], parts[1], name, size))
    images.sort(key=lambda e: (SPLITS.index(e.split), e.label, e.member))
    classes = tuple(sorted({e.label for e in images if e.split == "train"}))
    if not classes:
        raise DataError(
            f"{path}: no images under {prefix}train/",
            details=[_EXPECTED, f"image extensions: {', '.join(sorted(IMAGE_SUFFIXES))}"],
        )
    empty = sorted(folders - set(classes))
    if empty:
        shown = ", ".join(f"{prefix}train/{c}/" for c in empty[:SHOWN]) + (" …" if len(empty) > SHOWN else "")
        raise DataError(
            f"{path}: {len(empty)} class folder(s) of {prefix}train/ hold no images: {shown}",
            details=["a class needs training images; remove the folder or add its images",
                     f"image extensions: {', '.join(sorted(IMAGE_SUFFIXES))}"],
        )
    unknown = sorted({e.label for e in images if e.split == "test"} - set(classes))
    if unknown:
        raise DataError(
            f"{path}: {prefix}test/ has class folders that {prefix}train/ lacks: {', '.join(unknown)}",
            allowed=list(classes),
        )
    if not any(e.split == "test" for e in images):
        raise DataError(f"{path}: no images under {prefix}test/", details=[_EXPECTED])
    if len(classes) == 1:
        raise DataError(
            f"{path}: {prefix}train/ has a single class ({classes[0]}); a classifier needs at least two",
            details=[_EXPECTED],
        )
    return FolderTree(path=path, prefix=prefix, classes=classes, images=tuple(images))


def _is_image(name: str) -> bool:
    """An image file that is not hidden and not inside a hidden folder (macOS leaves `._x.jpg` files around)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and "/." not in "/" + name


def find_prefix(path: Path, names: Iterable[str], stop_early: bool = False) -> str:
    """'' when train/ and test/ are at the top, 'name/' when they sit under one top-level folder.

    With `stop_early`, the first complete layout met decides, so a caller that only needs to know the layout
    is valid can stop reading a long archive listing early.
    """
    at_top: set[str] = set()
    nested: dict[str, set[str]] = {}
    top_entries: set[str] = set()
    both = set(SPLITS)
    for name in names:
        parts = name.split("/")
        top_entries.add(parts[0] + "/" if len(parts) > 1 else parts[0])
        if len(parts) >= 2 and parts[0] in both:
            at_top.add(parts[0])
            if stop_early and at_top == both:
                return ""
        if len(parts) >= 3 and parts[1] in both and not parts[0].startswith(".") and parts[0] != "__MACOSX":
            found = nested.setdefault(parts[0], set())
            found.add(parts[1])
            if stop_early and found == both:
                return parts[0] + "/"
    if at_top == both:
        return ""
    candidates = sorted(top for top, splits in nested.items() if splits == both)
    if len(candidates) == 1:
        return candidates[0] + "/"
    kind = "archive" if path.is_file() else "directory"
    if candidates:
        raise DataError(
            f"{kind} {path} has train/ and test/ folders under several top-level folders: "
            f"{', '.join(c + '/' for c in candidates)}; point the root at one of them",
        )
    shown = sorted(top_entries)
    found_text = ", ".join(shown[:12]) + (f", … ({len(shown)} entries)" if len(shown) > 12 else "")
    raise DataError(
        f"{kind} {path} has no train/ and test/ folders; found: {found_text or 'nothing'}", details=[_EXPECTED]
    )


def list_directory(path: Path) -> list[tuple[str, int]]:
    """(posix path relative to `path`, size in bytes) of every regular file in the split folders, sorted.

    The split folders are found from the top two levels first, so a root pointed at a big unrelated directory
    fails fast instead of walking all of it.
    """
    prefix = find_prefix(path, _shallow_names(path))
    files: list[tuple[str, int]] = []
    seen: dict[tuple[int, int], str] = {}  # (device, inode) of every directory reached → where it was reached
    for split in SPLITS:
        files += _walk(path, f"{prefix}{split}", seen)
    return files


def _walk(root: Path, top: str, seen: dict[tuple[int, int], str]) -> list[tuple[str, int]]:
    """Files (and class folders, as 'name/') under root/top, following symbolic links but reaching no directory
    twice: a link back to a directory already walked (a cycle, or a second way in) is a DataError naming it."""
    out: list[tuple[str, int]] = []
    stack = [top]
    while stack:
        rel = stack.pop()
        full = root / rel
        try:
            stat = full.stat()
            entries = sorted(os.scandir(full), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot list directory {full}: {exc.strerror or exc}") from None
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            first = seen[key]
            if (rel + "/").startswith(first + "/"):
                problem = f"{rel} leads back to {first} (a symbolic-link cycle)"
            else:
                problem = f"{first} and {rel} are the same directory (a symbolic link makes a second way into it)"
            raise DataError(
                f"{root}: {problem}; its images would be read more than once",
                value=rel,
                details=["remove the symbolic link, or point it outside the dataset folder"],
            )
        seen[key] = rel
        out.append((rel + "/", 0))
        subdirs = []
        for entry in entries:
            name = f"{rel}/{entry.name}"
            try:
                if entry.is_dir():
                    if not entry.name.startswith("."):
                        subdirs.append(name)
                elif entry.is_file():
                    out.append((name, entry.stat().st_size))
            except OSError:  # a dangling link or a file removed meanwhile: not part of the dataset
                continue
        stack.extend(reversed(subdirs))
    return out


def _shallow_names(path: Path) -> Iterator[str]:
    """Names of the top two levels of a directory, folders ending in '/', in the form `find_prefix` reads."""
    try:
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if not entry.is_dir():
                yield entry.name
                continue
            children = sorted(os.scandir(entry.path), key=lambda e: e.name)
            if not children:
                yield f"{entry.name}/"
            for child in children:
                yield f"{entry.name}/{child.name}" + ("/" if child.is_dir() else "")
    except OSError as exc:
        raise DataError(f"cannot list directory {path}: {exc}") from None


def _clean(member: str) -> str:
    """Archive member names as plain relative posix paths (tar members often start with './')."""
    name = member.replace("\\", "/").lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name


def archive_names(path: Path) -> Generator[str, None, None]:
    """Names of the regular files in an archive, read lazily (a tar is listed as it is decompressed)."""
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                yield from (_clean(i.filename) for i in zf.infolist() if not i.is_dir())
            return
        with tarfile.open(path, "r:*") as tf:
            yield from (_clean(m.name) for m in tf if m.isfile())
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot read archive {path}: {exc}") from None


def read_files(path: Path) -> Iterator[tuple[str, int, bytes | None]]:
    """(name, size, bytes) of every regular file, in storage order; bytes only for files that may be images."""

    def wanted(name: str) -> bool:
        return _is_image(name) and bool(set(name.split("/")[:2]) & set(SPLITS))

    def bounded(name: str, size: int) -> bool:
        """Whether to read the file; an image over the size limit is an error before any of it is read."""
        if not wanted(name):
            return False
        if size > MAX_IMAGE_FILE_BYTES:
            raise DataError(
                f"{path}: {name} holds {size:,} bytes, over the limit of {MAX_IMAGE_FILE_BYTES:,} bytes per image file",
                details=["a dataset image is far smaller; the file is damaged or not an image"],
            )
        return True

    try:
        if path.is_dir():
            for name, size in list_directory(path):
                yield name, size, (path / name).read_bytes() if not name.endswith("/") and bounded(name, size) else None
        elif path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    name = _clean(info.filename)
                    if info.is_dir():
                        yield name, 0, None
                        continue
                    # zipfile stops at the member's declared size, so a lying header cannot make it read more.
                    yield name, info.file_size, zf.read(info) if bounded(name, info.file_size) else None
        else:
            # Stream mode reads a compressed tar front to back once instead of seeking per member.
            with tarfile.open(path, "r|*") as tf:
                for member in tf:
                    name = _clean(member.name)
                    if member.isdir():
                        yield name.rstrip("/") + "/", 0, None
                    elif member.isfile():
                        handle = tf.extractfile(member) if bounded(name, member.size) else None
                        yield name, member.size, handle.read() if handle is not None else None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {_plain_reason(exc)}") from None


def _plain_reason(exc: BaseException) -> str:
    """An archive error in words ("truncated" rather than an empty EOFError)."""
    if isinstance(exc, EOFError):
        return "the archive is truncated (it ends in the middle of a file)"
    text = str(exc).strip()
    if isinstance(exc, tarfile.ReadError) and "unexpected end of data" in text:
        return "the archive is truncated (it ends in the middle of a file)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
