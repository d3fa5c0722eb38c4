"""Image-folder datasets: `train/<class>/*` and `test/<class>/*` in a directory or an archive, decoded with Pillow.

The two split folders may sit at the top or under one top-level folder (`cifar10/train/airplane/0001.jpg`), as
archives usually wrap their content. `describe_folder` is cheap enough for every `lossbench validate`: it hashes
an archive and reads member names only until both split folders have shown up (an archive's own sha256 names
it, so the rest of the listing is not needed). `read_folder` reads the source once, front to back, with every
image's header, then decodes on a thread pool (Pillow releases the GIL while it decodes); the full layout checks
(class folders, unknown test classes) run on that same pass. `check_folder_images` is what `validate` adds: the full
listing and every image's header, without decoding pixels. Both slow checks (an archive's layout, every header)
are remembered across runs under the identity of what they read (`content_key`), so a second `validate` of the
same archive or folder skips them.

Bounds, checked before the bytes are read or the pixels decoded, so a hostile archive cannot exhaust memory: an
image file may hold at most `MAX_IMAGE_FILE_BYTES` (as stored, or decompressed from an archive, per the member's
header) and an image at most `MAX_IMAGE_PIXELS` pixels (per its header); a dataset's images together at most
`MAX_DATASET_PIXELS` pixels, and what it keeps in memory (its files until decoded, its images after any resize)
at most the memory budget of `lossbench.data.bounds`. A directory walk follows symbolic links
but never reaches a directory twice: a link cycle (`train/a/loop -> ..`) is an error naming the link.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lossbench.data.bounds import check_fits_memory, check_root_kind
from lossbench.data.fingerprint import file_digest, memoized_by_stat, remembered_check
from lossbench.errors import DataError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "test")
# Pillow modes that hold one gray channel; every other mode is converted to RGB.
_GRAY_MODES = frozenset({"1", "L", "LA"})
_EXPECTED = "expected train/<class>/<image> and test/<class>/<image>, optionally under one top-level folder"
#: Largest image file read, in bytes (64 MiB): a bigger member of an archive is an error before it is read.
MAX_IMAGE_FILE_BYTES = 64 * 2**20
#: Largest image decoded, in pixels (8192 × 8192): a bigger one is an error from its header, before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192
#: Largest number of pixels decoded for one dataset, summed over its images' headers (2**30, 3 GiB as RGB): a
#: small archive of many large images is an error before the pixels past the limit are decoded.
MAX_DATASET_PIXELS = 2**30
#: How many bad files an error names before it gives only their count.
_SHOWN = 5


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


def describe_folder(path: Path) -> str:
    """`folder:<name>:<12 hex>` for the image folder at `path`, after checking it has train/ and test/ folders.

    The hex digits are the sha256 of an archive file, or of a directory's image paths and sizes; neither depends
    on where the data lives, so a copy elsewhere has the same identity.
    """
    _check_root(path)
    name = os.path.basename(os.path.abspath(path))  # also for roots written as '.' or 'data/'
    if path.is_dir():
        digest = hashlib.sha256()
        for entry in _build_tree(path, _list_directory(path)).images:
            digest.update(f"{entry.member}\t{entry.size}\n".encode())
        return f"folder:{name}:{digest.hexdigest()[:12]}"

    def check_layout() -> str:
        names = _archive_names(path)
        try:
            return _find_prefix(path, names, stop_early=True)
        finally:
            names.close()

    memoized_by_stat(path, "layout", lambda: remembered_check(f"layout|{content_key(path)}", check_layout))
    return f"folder:{name}:{file_digest(path)[:12]}"


def content_key(path: Path) -> str:
    """What identifies the files of an image folder or archive for remembered checks, and the limits they were
    checked against. An archive: its size and sha256 (its member list follows from its bytes, and the digest is
    computed for the dataset identity anyway). A directory: a hash of its member list with each file's size and
    mtime, so that an image added, removed or rewritten gives another key."""
    limits = f"{MAX_IMAGE_FILE_BYTES}|{MAX_IMAGE_PIXELS}|{MAX_DATASET_PIXELS}|{','.join(sorted(IMAGE_SUFFIXES))}"
    if path.is_file():
        return f"archive|{path.stat().st_size}|{file_digest(path)}|{limits}"
    digest = hashlib.sha256()
    for name, size in _list_directory(path):
        try:
            mtime = (path / name).stat().st_mtime_ns
        except OSError:
            mtime = -1
        digest.update(f"{name}\t{size}\t{mtime}\n".encode())
    return f"directory|{digest.hexdigest()}|{limits}"


def read_folder(
    path: Path, image_size: int | None = None
) -> tuple[tuple[str, ...], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Class names and, per split, (images [N,C,H,W] uint8, labels [N] int64) of the image folder at `path`.

    Images are RGB unless every one is grayscale (then C = 1). `image_size` resizes every image to a square of
    that many pixels; without it, images of different sizes are resized to the most common size, with a warning.
    """
    _check_root(path)
    target = (image_size, image_size) if image_size else None
    listing: dict[str, int] = {}  # a tar may hold a name twice; the later member wins, as on extraction
    files: dict[str, bytes] = {}
    budget = _DatasetBudget(path, image_size)
    # Every header is read and the totals checked before the first pixel is decoded: the read is the short part
    # of the work (decoding takes several times longer), and an archive over a limit then costs no decoding.
    for name, size, data in _read_files(path):
        listing[name] = size
        files.pop(name, None)
        if data is not None:
            budget.add(name, _declared_pixels(data), len(data))
            files[name] = data
    futures: dict[str, Future[tuple[np.ndarray, bool]]] = {}
    pool = ThreadPoolExecutor(max_workers=_worker_count())
    try:
        for name in list(files):
            futures[name] = pool.submit(_decode_image, files.pop(name), target, name)
        tree = _build_tree(path, list(listing.items()))
        # Only the images of the tree are awaited, so a broken file outside it is never an error. Every bad file
        # is collected, so that the error names them all at once instead of one per run.
        decoded, bad = [], []
        for entry in tree.images:
            try:
                decoded.append(futures[entry.member].result())
            except _BadImage as exc:
                bad.append(exc)
        if bad:
            raise _bad_images_error(path, bad, len(tree.images))
    finally:
        # On an error (or Ctrl-C) the queued decodes are dropped instead of run to the end.
        pool.shutdown(wait=True, cancel_futures=True)
    arrays = [a for a, _ in decoded]
    gray = all(g for _, g in decoded)

    sizes = Counter(a.shape[:2] for a in arrays)
    if len(sizes) > 1:
        (height, width), count = sizes.most_common(1)[0]
        warnings.warn(
            f"images in {path} have {len(sizes)} different sizes; resizing {len(arrays) - count} of "
            f"{len(arrays)} to the most common size {height}x{width} (set image_size to choose another)",
            stacklevel=2,
        )
        arrays = [a if a.shape[:2] == (height, width) else _resize(a, (width, height)) for a in arrays]
    if gray:
        arrays = [a[:, :, None] for a in arrays]
    else:
        arrays = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]

    label_of = {name: i for i, name in enumerate(tree.classes)}
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split in SPLITS:
        picked = [i for i, e in enumerate(tree.images) if e.split == split]
        x = torch.from_numpy(np.stack([arrays[i] for i in picked])).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor([label_of[tree.images[i].label] for i in picked], dtype=torch.int64)
        splits[split] = (x, y)
    return tree.classes, splits


class _DatasetBudget:
    """Running totals of an image folder's images, checked as each header is read and before its pixels are
    decoded: the decoded pixels against MAX_DATASET_PIXELS, and the bytes the dataset will keep (resized to
    `image_size` when given; 3 channels, the most an image keeps) against the memory budget. A name a tar holds
    twice counts twice, so the totals never undercount."""

    def __init__(self, path: Path, image_size: int | None):
        self.path, self.image_size = path, image_size
        self.images = self.pixels = self.file_bytes = 0

    def add(self, member: str, pixels: int, file_bytes: int = 0) -> None:
        """Count one image of `pixels` (by its header) whose file, held until decoded, takes `file_bytes`."""
        self.images += 1
        self.pixels += pixels
        self.file_bytes += file_bytes
        if self.pixels > MAX_DATASET_PIXELS:
            raise DataError(
                f"{self.path}: its images hold more than {MAX_DATASET_PIXELS:,} pixels by their headers (reached at "
                f"{member}, image {self.images:,}), over the limit of {MAX_DATASET_PIXELS:,} decoded pixels per "
                "dataset",
                details=["a folder this large does not fit in memory as a tensor; use fewer or smaller images"],
            )
        kept = self.images * self.image_size ** 2 if self.image_size else self.pixels
        check_fits_memory(f"{self.path}: {self.images:,} images" + (
            f" resized to {self.image_size}×{self.image_size}" if self.image_size else "") + " and their files",
            3 * kept + self.file_bytes, hint="lower image_size, or use fewer images")


def _declared_pixels(data: bytes) -> int:
    """Pixels an image file declares in its header (0 when unreadable: its decode reports it)."""
    try:
        image = _open_checked(data, "")
    except _BadImage:
        return 0
    width, height = image.size
    image.close()
    return width * height


def _check_root(path: Path) -> None:
    check_root_kind(path)  # a FIFO named x.tar.gz would block tarfile's first read forever
    if not path.exists():
        raise DataError(f"dataset root {path} does not exist", details=[_EXPECTED])
    if path.is_file() and not is_archive(path):
        raise DataError(
            f"dataset root {path} is a file but not an archive",
            details=[f"expected a directory or one of {', '.join(ARCHIVE_SUFFIXES)}; {_EXPECTED}"],
        )


def _build_tree(path: Path, files: list[tuple[str, int]]) -> FolderTree:
    """Check the layout of a full listing and pick out its images."""
    prefix = _find_prefix(path, (name for name, _ in files))
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
        shown = ", ".join(f"{prefix}train/{c}/" for c in empty[:_SHOWN]) + (" …" if len(empty) > _SHOWN else "")
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


def _find_prefix(path: Path, names: Iterable[str], stop_early: bool = False) -> str:
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


def _list_directory(path: Path) -> list[tuple[str, int]]:
    """(posix path relative to `path`, size in bytes) of every regular file in the split folders, sorted.

    The split folders are found from the top two levels first, so a root pointed at a big unrelated directory
    fails fast instead of walking all of it.
    """
    prefix = _find_prefix(path, _shallow_names(path))
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
    """Names of the top two levels of a directory, folders ending in '/', in the form `_find_prefix` reads."""
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


def _archive_names(path: Path) -> Generator[str, None, None]:
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


def _read_files(path: Path) -> Iterator[tuple[str, int, bytes | None]]:
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
            for name, size in _list_directory(path):
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


class _BadImage(Exception):
    """One image file that cannot be used; `reason` is a plain sentence without object reprs."""

    def __init__(self, member: str, reason: str):
        super().__init__(f"{member}: {reason}")
        self.member, self.reason = member, reason


def _image_problem(exc: Exception) -> str:
    """Pillow's complaint about a file in plain words: its messages name the in-memory file by its repr."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the file", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open_checked(data: bytes, member: str) -> Any:
    """The Pillow image of `data` with only its header read; raises _BadImage when it is unreadable or too big."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises many types for bad files; each is a data problem of this file
        raise _BadImage(member, _image_problem(exc)) from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _BadImage(member, f"{width}×{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} pixels per image")
    return image


def _decode_image(data: bytes, target: tuple[int, int] | None, member: str) -> tuple[np.ndarray, bool]:
    """An image as [H,W] (gray) or [H,W,3] (RGB) uint8, resized to `target` (width, height) when given."""
    from PIL import Image

    with _open_checked(data, member) as image:
        try:
            gray = image.mode in _GRAY_MODES
            converted = image.convert("L" if gray else "RGB")
            if target is not None and converted.size != target:
                converted = converted.resize(target, Image.BILINEAR)
            return np.asarray(converted), gray
        except Exception as exc:  # a truncated or corrupt body behind a valid header
            raise _BadImage(member, _image_problem(exc)) from None


def _bad_images_error(path: Path, bad: list[_BadImage], total: int) -> DataError:
    shown = [f"{b.member}: {b.reason}" for b in bad[:_SHOWN]]
    more = [f"… and {len(bad) - _SHOWN} more"] if len(bad) > _SHOWN else []
    return DataError(f"{path}: {len(bad)} of {total} image file(s) cannot be used", details=shown + more)


def check_folder_images(path: Path) -> None:
    """What `validate` checks of an image folder beyond its layout: the full listing (class folders, empty and
    single classes) and the header of every image (format, size limits), without decoding any pixels.

    Raises DataError naming the first few bad files and their count. A folder or archive that passed is
    remembered (`content_key`): checking it again costs one listing (a directory) or one hash (an archive).
    """
    _check_root(path)
    # Only what depends on the files is remembered; the memory budget is this machine's, so it is checked anew.
    images, pixels = map(int, remembered_check(f"images|{content_key(path)}", lambda: _check_images(path)).split())
    check_fits_memory(f"{path}: {images:,} images and their files", 3 * pixels,
                      hint="lower image_size, or use fewer images")


def _check_images(path: Path) -> str:
    """`<images> <pixels>` of an image folder whose listing and headers pass; raises DataError otherwise."""
    listing: dict[str, int] = {}
    bad: dict[str, _BadImage] = {}
    budget = _DatasetBudget(path, None)
    for name, size, data in _read_files(path):
        listing[name] = size
        bad.pop(name, None)  # a tar may hold a name twice; the later member wins
        if data is None:
            continue
        try:
            image = _open_checked(data, name)
        except _BadImage as exc:
            bad[name] = exc
            continue
        budget.add(name, image.size[0] * image.size[1])
        image.close()
    tree = _build_tree(path, list(listing.items()))
    used = [bad[e.member] for e in tree.images if e.member in bad]
    if used:
        raise _bad_images_error(path, used, len(tree.images))
    return f"{budget.images} {budget.pixels}"


def _plain_reason(exc: BaseException) -> str:
    """An archive error in words ("truncated" rather than an empty EOFError)."""
    if isinstance(exc, EOFError):
        return "the archive is truncated (it ends in the middle of a file)"
    text = str(exc).strip()
    if isinstance(exc, tarfile.ReadError) and "unexpected end of data" in text:
        return "the archive is truncated (it ends in the middle of a file)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`array` ([H,W] or [H,W,3] uint8) resized to `size` = (width, height) with Pillow's antialiased bilinear."""
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR))


def _worker_count() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, available))
