"""Image-folder datasets: `train/<class>/*` and `test/<class>/*` in a directory or an archive, decoded with Pillow.

`describe_folder` is cheap enough for every `lossbench validate`: it hashes an archive and reads member names
only until both split folders have shown up (an archive's own sha256 names it, so the rest of the listing is not
needed). `read_folder` reads the source once, front to back, with every image's header, then decodes on a thread
pool (Pillow releases the GIL while it decodes); the full layout checks (class folders, unknown test classes) run
on that same pass. `check_folder_images` is what `validate` adds: the full listing and every image's header,
without decoding pixels. Both slow checks (an archive's layout, every header) are remembered across runs under
the identity of what they read (`content_key`), so a second `validate` of the same archive or folder skips them.

The listing and layout are `lossbench.data.folder_files`'s, the decoding of one image and the bounds on pixels
and memory `lossbench.data.folder_images`'s.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from lossbench.data.bounds import check_fits_memory
from lossbench.data.fingerprint import file_digest, memoized_by_stat, remembered_check
from lossbench.data.folder_files import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_FILE_BYTES,
    SHOWN,
    SPLITS,
    FolderTree,
    archive_names,
    build_tree,
    check_root,
    find_prefix,
    list_directory,
    read_files,
)
from lossbench.data.folder_images import (
    MAX_DATASET_PIXELS,
    MAX_IMAGE_PIXELS,
    BadImage,
    DatasetBudget,
    declared_pixels,
    decode_image,
    open_checked,
    resize_image,
)
from lossbench.errors import DataError


def describe_folder(path: Path) -> str:
    """`folder:<name>:<12 hex>` for the image folder at `path`, after checking it has train/ and test/ folders.

    The hex digits are the sha256 of an archive file, or of a directory's image paths and sizes; neither depends
    on where the data lives, so a copy elsewhere has the same identity.
    """
    check_root(path)
    name = os.path.basename(os.path.abspath(path))  # also for roots written as '.' or 'data/'
    if path.is_dir():
        digest = hashlib.sha256()
        for entry in build_tree(path, list_directory(path)).images:
            digest.update(f"{entry.member}\t{entry.size}\n".encode())
        return f"folder:{name}:{digest.hexdigest()[:12]}"

    def check_layout() -> str:
        names = archive_names(path)
        try:
            return find_prefix(path, names, stop_early=True)
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
    for name, size in list_directory(path):
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
    check_root(path)
    listing, files = _read_checked(path, image_size)
    tree, decoded = _decode_tree(path, listing, files, (image_size, image_size) if image_size else None)
    arrays = _same_shape([a for a, _ in decoded], all(g for _, g in decoded), path)
    label_of = {name: i for i, name in enumerate(tree.classes)}
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split in SPLITS:
        picked = [i for i, e in enumerate(tree.images) if e.split == split]
        x = torch.from_numpy(np.stack([arrays[i] for i in picked])).permute(0, 3, 1, 2).contiguous()
        y = torch.tensor([label_of[tree.images[i].label] for i in picked], dtype=torch.int64)
        splits[split] = (x, y)
    return tree.classes, splits


def _read_checked(path: Path, image_size: int | None) -> tuple[dict[str, int], dict[str, bytes]]:
    """The listing (name → size in bytes) of the folder at `path` and the bytes of its images, once every header
    has been counted against the dataset's bounds (images resized to `image_size` when given)."""
    listing: dict[str, int] = {}  # a tar may hold a name twice; the later member wins, as on extraction
    files: dict[str, bytes] = {}
    budget = DatasetBudget(path, image_size)
    # Every header is read and the totals checked before the first pixel is decoded: the read is the short part
    # of the work (decoding takes several times longer), and an archive over a limit then costs no decoding.
    for name, size, data in read_files(path):
        listing[name] = size
        files.pop(name, None)
        if data is not None:
            budget.add(name, declared_pixels(data), len(data))
            files[name] = data
    return listing, files


def _decode_tree(path: Path, listing: dict[str, int], files: dict[str, bytes], target: tuple[int, int] | None
                 ) -> tuple[FolderTree, list[tuple[np.ndarray, bool]]]:
    """The checked tree of `listing` and its images decoded on a thread pool, in the tree's order, each as
    (array, whether gray); `files` is emptied as the decodes are queued. Raises DataError naming every bad image."""
    futures: dict[str, Future[tuple[np.ndarray, bool]]] = {}
    pool = ThreadPoolExecutor(max_workers=_worker_count())
    try:
        for name in list(files):
            futures[name] = pool.submit(decode_image, files.pop(name), target, name)
        tree = build_tree(path, list(listing.items()))
        # Only the images of the tree are awaited, so a broken file outside it is never an error. Every bad file
        # is collected, so that the error names them all at once instead of one per run.
        decoded, bad = [], []
        for entry in tree.images:
            try:
                decoded.append(futures[entry.member].result())
            except BadImage as exc:
                bad.append(exc)
        if bad:
            raise _bad_images_error(path, bad, len(tree.images))
    finally:
        # On an error (or Ctrl-C) the queued decodes are dropped instead of run to the end.
        pool.shutdown(wait=True, cancel_futures=True)
    return tree, decoded


def _same_shape(arrays: list[np.ndarray], gray: bool, path: Path) -> list[np.ndarray]:
    """`arrays` as [H,W,C] of one size (the most common one, with a warning) and one channel count (1 when
    `gray`, else 3)."""
    sizes = Counter(a.shape[:2] for a in arrays)
    if len(sizes) > 1:
        (height, width), count = sizes.most_common(1)[0]
        warnings.warn(
            f"images in {path} have {len(sizes)} different sizes; resizing {len(arrays) - count} of "
            f"{len(arrays)} to the most common size {height}x{width} (set image_size to choose another)",
            stacklevel=3,  # the caller of read_folder
        )
        arrays = [a if a.shape[:2] == (height, width) else resize_image(a, (width, height)) for a in arrays]
    if gray:
        return [a[:, :, None] for a in arrays]
    return [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]


def _bad_images_error(path: Path, bad: list[BadImage], total: int) -> DataError:
    shown = [f"{b.member}: {b.reason}" for b in bad[:SHOWN]]
    more = [f"… and {len(bad) - SHOWN} more"] if len(bad) > SHOWN else []
    return DataError(f"{path}: {len(bad)} of {total} image file(s) cannot be used", details=shown + more)


def check_folder_images(path: Path) -> None:
    """What `validate` checks of an image folder beyond its layout: the full listing (class folders, empty and
    single classes) and the header of every image (format, size limits), without decoding any pixels.

    Raises DataError naming the first few bad files and their count. A folder or archive that passed is
    remembered (`content_key`): checking it again costs one listing (a directory) or one hash (an archive).
    """
    check_root(path)
    # Only what depends on the files is remembered; the memory budget is this machine's, so it is checked anew.
    images, pixels = map(int, remembered_check(f"images|{content_key(path)}", lambda: _check_images(path)).split())
    check_fits_memory(f"{path}: {images:,} images and their files", 3 * pixels,
                      hint="lower image_size, or use fewer images")


def _check_images(path: Path) -> str:
    """`<images> <pixels>` of an image folder whose listing and headers pass; raises DataError otherwise."""
    listing: dict[str, int] = {}
    bad: dict[str, BadImage] = {}
    budget = DatasetBudget(path, None)
    for name, size, data in read_files(path):
        listing[name] = size
        bad.pop(name, None)  # a tar may hold a name twice; the later member wins
        if data is None:
            continue
        try:
            image = open_checked(data, name)
        except BadImage as exc:
            bad[name] = exc
            continue
        budget.add(name, image.size[0] * image.size[1])
        image.close()
    tree = build_tree(path, list(listing.items()))
    used = [bad[e.member] for e in tree.images if e.member in bad]
    if used:
        raise _bad_images_error(path, used, len(tree.images))
    return f"{budget.images} {budget.pixels}"


def _worker_count() -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, available))
