"""A seeded fuzzer of malformed suites: every one exits 2 with a located message, no traceback, nothing written.

Each case starts from a valid suite and breaks it in one way drawn from a category (structure, components,
parameters, types, numbers, encodings, YAML bombs, bounds, overrides, options, ...), with the details drawn at
random from a fixed seed so that a failure reproduces. Nothing trains: every case fails validation.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.losses import LOSSES

from conftest import TINY_SUITE, no_hang

CASES = 150
runner = CliRunner()

# What a case returns: the suite file's bytes, and the extra command-line arguments (overrides, options).
Case = tuple[bytes, list[str]]


def _text(text: str) -> Case:
    return text.encode(), []


def _replace(old: str, new: str) -> Case:
    assert old in TINY_SUITE
    return _text(TINY_SUITE.replace(old, new, 1))


def unknown_key(rng: random.Random) -> Case:
    key = rng.choice(["epoch", "seed", "lr", "colour", "batchsize", "optimiser", "grids", "x"])
    where = rng.choice(["train:\n", "dataset:\n", "grid:\n", ""])
    if not where:
        return _text(TINY_SUITE + f"{key}: 1\n")
    return _replace(where, f"{where}  {key}: 1\n")


def component_typo(rng: random.Random) -> Case:
    name = rng.choice(["cross_entropy", "focal", "label_smoothing", "hinge", "poly1"])
    while name in LOSSES.names():
        i = rng.randrange(len(name))
        name = name[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz_") + name[i + 1:]
    axis = rng.choice(["loss", "regularizer", "augmentation"])
    old = {"loss": "loss: [cross_entropy, mse]", "regularizer": "regularizer: [none]",
           "augmentation": "augmentation: [none, crop]"}[axis]
    return _replace(old, f"{axis}: [{name}]")


def bad_parameter(rng: random.Random) -> Case:
    value = rng.choice(["x", "-1", "[1]", "{a: 1}", "null", "-0.5"])
    choice = rng.randrange(4)
    if choice == 0:
        return _replace("augmentation: [none, crop]", f"augmentation: [none, {{name: crop, padding: {value}}}]")
    if choice == 1:
        return _replace("lr: 0.05", f"lr: {value}")
    if choice == 2:
        return _replace("loss: [cross_entropy, mse]", f"loss: [{{name: focal, gama: {value}}}]")
    return _replace("  name: small_cnn\n", f"  name: small_cnn\n  widht: {value}\n")


def boolean_as_number(rng: random.Random) -> Case:
    value = rng.choice(["true", "false", "yes", "on"])
    old, new = rng.choice([("epochs: 2", "epochs: {}"), ("batch_size: 64", "batch_size: {}"),
                           ("seeds: [0]", "seeds: [{}]"), ("train_subset: 400", "train_subset: {}"),
                           ("lr: 0.05", "lr: {}"), ("momentum: 0.9", "momentum: {}")])
    if value in ("yes", "on") and old.startswith(("epochs", "batch")):
        value = "true"
    return _replace(old, new.format(value))


def non_finite(rng: random.Random) -> Case:
    value = rng.choice([".nan", ".NaN", ".inf", "-.inf", "+.Inf", ".INF"])
    old, new = rng.choice([("lr: 0.05", "lr: {}"), ("momentum: 0.9", "momentum: {}"),
                           ("loss: [cross_entropy, mse]", "loss: [{{name: focal, gamma: {}}}]"),
                           ("regularizer: [none]", "regularizer: [{{name: l2, weight: {}}}]"),
                           ("train_subset: 400", "train_subset: {}"), ("epochs: 2", "epochs: {}")])
    return _replace(old, new.format(value))


def not_utf8(rng: random.Random) -> Case:
    raw = TINY_SUITE.encode()
    kind = rng.randrange(3)
    if kind == 0:
        return TINY_SUITE.encode(rng.choice(["utf-16", "utf-32"])), []
    if kind == 1:
        i = rng.randrange(len(raw))
        return raw[:i] + bytes([rng.randrange(0x80, 0x100)]) + b"\xff" + raw[i:], []
    return bytes(rng.randrange(256) for _ in range(rng.randrange(16, 256))) + b"\xff", []


def duplicate_key(rng: random.Random) -> Case:
    line = rng.choice(["  epochs: 3\n", "  loss: [mae]\n", "  name: mnist\n", "seeds: [1]\n", "name: again\n"])
    anchor = {"  epochs: 3\n": "  epochs: 2\n", "  loss: [mae]\n": "  regularizer: [none]\n",
              "  name: mnist\n": "  train_subset: 400\n", "seeds: [1]\n": "seeds: [0]\n",
              "name: again\n": "name: tiny\n"}[line]
    return _replace(anchor, anchor + line)


def alias_bomb(rng: random.Random) -> Case:
    width, depth = rng.randint(5, 12), rng.randint(6, 9)
    lines = [f"b0: &b0 [{', '.join(['lol'] * width)}]"]
    lines += [f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * width) + "]" for i in range(1, depth)]
    target = rng.choice(["description: *b{}", "seeds: *b{}", "extra: *b{}"])
    return _text("\n".join(lines) + "\n" + TINY_SUITE + target.format(depth - 1) + "\n")


def recursion(rng: random.Random) -> Case:
    if rng.random() < 0.5:
        return _text(TINY_SUITE + rng.choice(["loop: &l [*l]\n", "loop: &l {a: *l}\n", "loop: &l [1, [2, *l]]\n"]))
    depth = rng.choice([51, 60, 500, 5_000, 20_000])
    opening, closing = rng.choice([("[", "]"), ("{a: ", "}")])
    return _replace("seeds: [0]", "seeds: " + opening * depth + closing * depth)


def out_of_bounds(rng: random.Random) -> Case:
    old, new = rng.choice([
        ("epochs: 2", f"epochs: {rng.choice([0, -3, 10_001, 10**9, '1e12', 2.5])}"),
        ("batch_size: 64", f"batch_size: {rng.choice([0, 65_537, '1e15', 10**12])}"),
        ("  name: digits\n", f"  name: digits\n  image_size: {rng.choice([0, 1025, 100_000])}\n"),
        ("seeds: [0]", f"seeds: [{rng.choice([-1, -(2**40), 2**32, 2**70])}]"),
        ("train_subset: 400", f"train_subset: {rng.choice([0, -5, 1.5, 10**12])}"),
        ("  name: digits\n", f"  name: digits\n  val_fraction: {rng.choice([1.0, -0.1, 2])}\n"),
    ])
    return _replace(old, new)


def repeated_level(rng: random.Random) -> Case:
    return _replace("loss: [cross_entropy, mse]", rng.choice([
        "loss: [cross_entropy, cross_entropy]", "loss: [mse, focal, {name: focal, gamma: 2}]",
        "loss: [mse, {name: mse}]"]))


def huge_grid(rng: random.Random) -> Case:
    # More than MAX_CELLS cells from a short file: many small levels multiply.
    regs = ", ".join(f"{{name: l2, weight: {w}}}" for w in range(1, rng.randint(30, 60)))
    augs = ", ".join(["none", "hflip", "vflip", "crop", "translate", "rotate", "scale", "cutout"])
    seeds = ", ".join(str(i) for i in range(rng.randint(200, 2_000)))
    text = (TINY_SUITE.replace("regularizer: [none]", f"regularizer: [{regs}]")
            .replace("augmentation: [none, crop]", f"augmentation: [{augs}]").replace("seeds: [0]", f"seeds: [{seeds}]"))
    return _text(text)


def bad_syntax(rng: random.Random) -> Case:
    return _text(rng.choice([
        TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, mse"),
        TINY_SUITE.replace("  epochs: 2", "\tepochs: 2"),
        TINY_SUITE.replace("  batch_size: 64", "   batch_size: 64"),
        TINY_SUITE + "---\nname: second\n",
        TINY_SUITE + "grid: *missing\n",
        TINY_SUITE.replace("name: tiny", "name: 'tiny"),
        TINY_SUITE.replace("seeds: [0]", "seeds: !!python/object/apply:os.system ['echo hacked']"),
        TINY_SUITE.replace("name: tiny", "name: !!binary aGVsbG8="),
        TINY_SUITE.replace("seeds: [0]", "seeds: !custom [0]"),
    ]))


def wrong_shape(rng: random.Random) -> Case:
    return _text(rng.choice([
        TINY_SUITE.replace("dataset:\n  name: digits\n  train_subset: 400\n", "dataset: 5\n"),
        TINY_SUITE.replace("seeds: [0]", "seeds: {a: 1}"),
        TINY_SUITE.replace("seeds: [0]", "seeds: 2020-01-01"),
        TINY_SUITE.replace("name: tiny", "name: 'bad name!'"),
        TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: []"),
        TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [{name: [adam]}]"),
        TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [{gamma: 2}]"),
        TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [{name: mse, on: outputs}]"),
        TINY_SUITE.replace("device: cpu", f"device: {rng.choice(['gpu', 'cuda0', 'tpu', 3])}"),
        "- just\n- a list\n", "", "42\n", "name: x\n",
    ]))


def control_characters(rng: random.Random) -> Case:
    char = chr(rng.choice([0, 1, 7, 8, 0x1B, 0x7F, 0xFFFE]))
    i = TINY_SUITE.index("tiny")
    return _text(TINY_SUITE[:i] + char + TINY_SUITE[i:])


def bad_override(rng: random.Random) -> Case:
    return TINY_SUITE.encode(), [rng.choice([
        "train.epochs=0", "train.epochs=true", "train.epoch=2", "grid.loss=[cross_entropy,focl]", "train.epochs",
        "=2", "grid.loss[9]=mse", "train.epochs.x=1", "train.optimizer.lr=.inf", "seeds=[-1]", "a..b=1",
        "dataset.train_subset=1e12", "grid.loss=[mse, mse]", "description=[unclosed", "seeds=&a [*a]",
    ])]


def custom_name(rng: random.Random) -> Case:
    name = rng.choice(["no_such_module_xyz:Loss", "os.path:join", "collections:OrderedDict", "math:pi",
                       "builtins:int", "lossbench.losses:NoSuchLoss", ":x", "a:"])
    axis = rng.choice(["loss: [cross_entropy, mse]", "regularizer: [none]", "augmentation: [none, crop]"])
    return _replace(axis, f"{axis.split(':')[0]}: ['{name}']")


def subset_too_large(rng: random.Random) -> Case:
    key = rng.choice(["train_subset", "test_subset"])
    return _replace("train_subset: 400", f"{key}: {rng.randint(1_439, 10**6)}")


def bad_option(rng: random.Random) -> Case:
    return TINY_SUITE.encode(), rng.choice([["--device", "gpu"], ["--device", "tpu"], ["--epochs", "0"],
                                            ["--epochs", "20000"], ["--seeds", "-1"], ["--seeds", "0,0"],
                                            ["--seeds", "x"]])


CATEGORIES: list[Callable[[random.Random], Case]] = [
    unknown_key, component_typo, bad_parameter, boolean_as_number, non_finite, not_utf8, duplicate_key, alias_bomb,
    recursion, out_of_bounds, repeated_level, huge_grid, bad_syntax, wrong_shape, control_characters, bad_override,
    bad_option, custom_name, subset_too_large,
]

# A message is located when it names the suite file (with its line where there is one) or the command-line option.
LOCATED = re.compile(r"suite\.yaml(:\d+:\d+)?|override '|--device|--epochs|--seeds")
FORBIDDEN = ["Traceback", "Value error", "instance of", "Input should", "object at 0x", "<suite>"]


def _cases() -> list[tuple[str, Case, str]]:
    rng = random.Random(20261129)
    out = []
    for i in range(CASES):
        category = CATEGORIES[i % len(CATEGORIES)]
        out.append((category.__name__, category(rng), rng.choice(["validate", "run"])))
    return out


@pytest.fixture(scope="module")
def fuzz_cases() -> list[tuple[str, Case, str]]:
    return _cases()


def test_the_fuzzer_covers_every_category(fuzz_cases: list[tuple[str, Case, str]]) -> None:
    assert len(fuzz_cases) == CASES
    assert {name for name, _, _ in fuzz_cases} == {c.__name__ for c in CATEGORIES}


@pytest.mark.parametrize("index", range(CASES))
def test_malformed_suite(index: int, fuzz_cases: list[tuple[str, Case, str]], tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    name, (raw, extra), command = fuzz_cases[index]
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(raw)
    out = tmp_path / "out"
    args = [command, str(suite), *extra] + (["--out", str(out)] if command == "run" else [])
    result = runner.invoke(app, args)
    context = f"{name}: {args[2:]} {raw[:200]!r}\n{result.output}"
    assert result.exit_code == 2, context
    assert result.exception is None or isinstance(result.exception, SystemExit), context
    assert LOCATED.search(result.output), context
    for word in FORBIDDEN:
        assert word not in result.output, context
    assert os.listdir(work) == [] and not out.exists(), context


MUTATIONS = 80
_YAML_CHARS = list("[]{}:,-&*!|>'\"#%@`?\t\n .0123456789aexyz")


def _mutate(rng: random.Random) -> bytes:
    """The valid suite with a few characters inserted, deleted or replaced: often invalid, sometimes still valid."""
    text = list(TINY_SUITE)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(text))
        action = rng.randrange(3)
        if action == 0:
            text.insert(i, rng.choice(_YAML_CHARS))
        elif action == 1:
            del text[i]
        else:
            text[i] = rng.choice(_YAML_CHARS)
    return "".join(text).encode()


@pytest.mark.parametrize("index", range(MUTATIONS))
def test_random_edits_never_crash(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Character-level edits of a valid suite: whatever they produce, validate answers 0 (still valid) or 2 with a
    # located message, never a traceback, and writes nothing.
    rng = random.Random(7_000 + index)
    raw = _mutate(rng)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    suite = tmp_path / "suite.yaml"
    suite.write_bytes(raw)
    result = runner.invoke(app, ["validate", str(suite)])
    context = f"{raw!r}\n{result.output}"
    assert result.exit_code in (0, 2), context
    assert result.exception is None or isinstance(result.exception, SystemExit), context
    if result.exit_code == 2:
        assert LOCATED.search(result.output), context
    for word in FORBIDDEN:
        assert word not in result.output, context
    assert os.listdir(work) == [], context


# ---------------------------------------------------------------------------------------------------------------
# Hostile files and inputs. Each must exit 2 with a located message, no traceback, nothing written. Every case runs
# in-process (CliRunner) in the default run. Run as a user runs it -- the real command in its own process, whose
# peak memory (its RSS, from the kernel's accounting of that one child) and CPU time are measured, under 1 GB and
# 20 CPU seconds -- the default run starts REAL_PROCESS_CASES, one per way a file can hurt (a decompression bomb, a
# FIFO that would block a reader, an endless device); the full per-process sweep is marked slow. Where the libraries alone take most of a gigabyte (torch and torchvision's shared libraries count in
# RSS: a valid `validate` of a torchvision model peaks near 1.1 GB), the bound is MAX_RSS_ABOVE_VALID over the same
# kind of command on a valid suite.

import gzip  # noqa: E402
import io  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import threading  # noqa: E402
import zlib  # noqa: E402

MAX_RSS_BYTES = 1 * 2**30
MAX_RSS_ABOVE_VALID = 256 * 2**20
MAX_CPU_S = 20.0
# A guard against a hang, not a speed bound: a regression fails here instead of blocking the test run.
_HANG_GUARD_S = 300
HOSTILE_LOCATED = re.compile(LOCATED.pattern + r"|--data-root|--tensorboard|--out")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height RGB pixels, with a tiny body: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _idx(shape: tuple[int, ...], body: bytes = b"") -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape) + body


def _idx_folder(root: Path, train_images: bytes, train_count: int = 2, gz: bool = False) -> Path:
    root.mkdir(parents=True)
    files = {"train-images-idx3-ubyte": train_images, "train-labels-idx1-ubyte": _idx((train_count,), bytes(train_count)),
             "t10k-images-idx3-ubyte": _idx((2, 28, 28), bytes(2 * 784)), "t10k-labels-idx1-ubyte": _idx((2,), bytes(2))}
    for name, data in files.items():
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return root


def _suite(tmp: Path, dataset: str = "") -> Path:
    text = TINY_SUITE.replace("dataset:\n  name: digits\n  train_subset: 400\n", dataset) if dataset else TINY_SUITE
    path = tmp / "suite.yaml"
    path.write_text(text)
    return path


def png_bomb_archive(tmp: Path) -> list[str]:
    archive = tmp / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            for label in ("a", "b"):
                _tar_member(tar, f"{split}/{label}/0.png", _png_header(8, 8))
        for i in range(100):  # 100 × 8192² pixels, each within the per-image limit: ~20 GB as RGB, from ~30 KB
            _tar_member(tar, f"train/a/big{i:03d}.png", _png_header(8192, 8192))
    return ["validate", str(_suite(tmp, f"dataset:\n  name: image_folder\n  root: {archive}\n"))]


def png_bomb_archive_run(tmp: Path) -> list[str]:
    return ["run", *png_bomb_archive(tmp)[1:], "--out", str(tmp / "out")]


def idx_gzip_bomb(tmp: Path) -> list[str]:
    root = _idx_folder(tmp / "kmnist", b"", gz=True)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx((5_000_000, 28, 28), bytes(2**26))))
    return ["validate", str(_suite(tmp, f"dataset:\n  name: kmnist\n  root: {root}\n"))]


def idx_size_overflow(tmp: Path) -> list[str]:
    root = _idx_folder(tmp / "kmnist", _idx((4194304, 4194304, 4194304), bytes(784)))
    return ["run", str(_suite(tmp, f"dataset:\n  name: kmnist\n  root: {root}\n")), "--out", str(tmp / "out")]


def idx_without_images(tmp: Path) -> list[str]:
    root = _idx_folder(tmp / "kmnist", _idx((0, 28, 28)), train_count=0)
    return ["validate", str(_suite(tmp, f"dataset:\n  name: kmnist\n  root: {root}\n"))]


def idx_fifo(tmp: Path) -> list[str]:
    root = _idx_folder(tmp / "kmnist", _idx((2, 28, 28), bytes(2 * 784)))
    (root / "train-images-idx3-ubyte").unlink()
    os.mkfifo(root / "train-images-idx3-ubyte")
    return ["validate", str(_suite(tmp, f"dataset:\n  name: kmnist\n  root: {root}\n"))]


def cifar_resized_beyond_memory(tmp: Path) -> list[str]:
    return ["validate", str(_suite(tmp, "dataset:\n  name: cifar10\n  image_size: 1024\n"))]


def fifo_root(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "f.tar.gz")
    return ["validate", str(_suite(tmp, f"dataset:\n  name: cifar10\n  root: {tmp / 'f.tar.gz'}\n"))]


def device_root(tmp: Path) -> list[str]:
    return ["run", str(_suite(tmp)), "--data-root", "/dev/zero", "dataset.name=cifar10", "--out", str(tmp / "out")]


def stl10_names_not_utf8(tmp: Path) -> list[str]:
    binary = tmp / "stl" / "stl10_binary"
    binary.mkdir(parents=True)
    for split in ("train", "test"):
        (binary / f"{split}_X.bin").write_bytes(bytes(2 * 3 * 96 * 96))
        (binary / f"{split}_y.bin").write_bytes(bytes([1, 2]))
    (binary / "class_names.txt").write_bytes("airplane\nbird\n".encode("utf-16"))
    return ["run", str(_suite(tmp, f"dataset:\n  name: stl10\n  root: {tmp / 'stl'}\n")), "--out", str(tmp / "out")]


def stl10_names_not_utf8_validate(tmp: Path) -> list[str]:
    return ["validate", stl10_names_not_utf8(tmp)[1]]


def tensorboard_is_a_file(tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("mine\n")
    return ["run", str(_suite(tmp)), "--tensorboard", str(tmp / "notes.txt"), "--out", str(tmp / "out")]


def vit_on_small_images(tmp: Path) -> list[str]:
    return ["validate", str(_suite(tmp)), "model.name=torchvision:vit_b_16"]


def another_suites_directory(tmp: Path) -> list[str]:
    theirs = tmp / "theirs"
    (theirs / "cells").mkdir(parents=True)
    (theirs / ".lossbench").write_text("lossbench results\n")
    (theirs / "suite.yaml").write_text("name: other\ngrid: {loss: [mse]}\n")
    return ["run", str(_suite(tmp)), "--out", str(theirs)]


def report_into_a_foreign_directory(tmp: Path) -> list[str]:
    results = Path(__file__).resolve().parent.parent / "results" / "smoke-digits-3seeds"  # committed examples
    notes = tmp / "notes"
    notes.mkdir()
    (notes / "summary.csv").write_text("mine\n")
    return ["report", str(results), "--out", str(notes / "paper.md")]


def hostile_override(text: str) -> Callable[[Path], list[str]]:
    def case(tmp: Path) -> list[str]:
        return ["validate", str(_suite(tmp)), text]

    case.__name__ = f"override {text[:40]}"
    return case


HOSTILE: list[Callable[[Path], list[str]]] = [
    png_bomb_archive, png_bomb_archive_run, idx_gzip_bomb, idx_size_overflow, idx_without_images, idx_fifo,
    cifar_resized_beyond_memory, fifo_root, device_root, stl10_names_not_utf8, stl10_names_not_utf8_validate,
    tensorboard_is_a_file,
    vit_on_small_images, another_suites_directory, report_into_a_foreign_directory,
    hostile_override("grid.loss[0].gamma.x=1"), hostile_override("model.name=torchvision:x"),
    hostile_override("seeds={min: 2, max: 1000000000, target: {metric: test_acc, half_width: 0.01}}"),
    hostile_override("name=!!binary aGVsbG8="), hostile_override("dataset.root=!!binary aGVsbG8="),
    hostile_override("seeds=!!set {0, 1}"), hostile_override("description=" + "x" * 20_000),
    hostile_override("seeds={min: 2, max: 5, target: {metric: precision_at_1, half_width: 0.01}}"),
]


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in root.rglob("*")}


def _run_measured(args: list[str], cwd: Path) -> tuple[int, str, int, float]:
    """(exit code, stdout + stderr, peak RSS in bytes, CPU seconds) of `python -m lossbench ARGS`."""
    out = cwd.parent / "output.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "lossbench", *args], cwd=cwd, stdout=sink, stderr=sink,
                                stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
        guard = threading.Timer(_HANG_GUARD_S, proc.kill)
        guard.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource use
        finally:
            guard.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.read_text(errors="replace"), usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def valid_peak_rss(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], int]:
    """Peak RSS of `validate` on a valid suite with a torchvision model: the libraries' own share of memory.
    Measured once, on first call: only a case over MAX_RSS_BYTES needs it."""
    measured: list[int] = []

    def peak() -> int:
        if not measured:
            tmp = tmp_path_factory.mktemp("valid")
            work = tmp / "cwd"
            work.mkdir()
            code, output, rss, _ = _run_measured(["validate", str(_suite(tmp)), "model.name=torchvision:resnet18"],
                                                 work)
            assert code == 0, output
            measured.append(rss)
        return measured[0]

    return peak


REAL_PROCESS_CASES = {"idx_gzip_bomb", "idx_fifo", "device_root"}


def _assert_refused(name: str, code: int, output: str, work: Path, data: Path, before: dict[str, float]) -> str:
    """The checks every hostile case must pass, in-process or not; returns the context for further messages."""
    text = " ".join(output.split())
    context = f"{name}: {text[:2000]}"
    assert code == 2, context
    assert HOSTILE_LOCATED.search(text), context
    for word in FORBIDDEN:
        assert word not in text, context
    assert len(text) < 4_000, context  # nothing echoed whole (a 20,000-character override)
    assert os.listdir(work) == [] and _snapshot(data) == before, context
    return context


def _hostile_case(make: Callable[[Path], list[str]], tmp_path: Path) -> tuple[Path, Path, list[str], dict[str, float]]:
    """An empty working directory, the case's data directory with its files made, the command's arguments, and a
    snapshot of the data to show that the refused command changed nothing."""
    work = tmp_path / "cwd"
    work.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    args = make(data)
    return work, data, args, _snapshot(data)


@pytest.mark.parametrize("make", HOSTILE, ids=[m.__name__ for m in HOSTILE])
def test_hostile_input_in_process(make: Callable[[Path], list[str]], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    work, data, args, before = _hostile_case(make, tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("COLUMNS", "200")
    with no_hang(_HANG_GUARD_S):
        result = runner.invoke(app, args)
    context = _assert_refused(make.__name__, result.exit_code, result.output, work, data, before)
    assert result.exception is None or isinstance(result.exception, SystemExit), context


@pytest.mark.parametrize("make", [pytest.param(m, id=m.__name__, marks=() if m.__name__ in REAL_PROCESS_CASES
                                               else pytest.mark.slow) for m in HOSTILE])
def test_hostile_input(make: Callable[[Path], list[str]], tmp_path: Path,
                       valid_peak_rss: Callable[[], int]) -> None:
    work, data, args, before = _hostile_case(make, tmp_path)
    code, output, rss, cpu = _run_measured(args, work)
    context = _assert_refused(make.__name__, code, output, work, data, before)
    if rss >= MAX_RSS_BYTES:  # the bound is max(MAX_RSS_BYTES, valid + MAX_RSS_ABOVE_VALID)
        valid = valid_peak_rss()
        assert rss < valid + MAX_RSS_ABOVE_VALID, (
            f"{context}\npeak RSS {rss / 2**20:.0f} MiB, valid {valid / 2**20:.0f} MiB")
    assert cpu < MAX_CPU_S, f"{context}\nCPU {cpu:.1f} s"


def test_the_real_process_cases_are_hostile_cases() -> None:
    assert REAL_PROCESS_CASES <= {m.__name__ for m in HOSTILE}
