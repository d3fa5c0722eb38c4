"""Strict suite reading: every malformed suite is one located error per mistake, exit 2, nothing written.

Each test is a case a user met (or an attacker wrote): bytes that are not UTF-8, YAML bombs, duplicate keys,
booleans used as numbers, non-finite numbers, values past the documented bounds, repeated grid levels.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossbench.cli import app
from lossbench.config.fields import MAX_CELLS
from lossbench.suite import load_suite
from lossbench.grid import _fmt
from lossbench.suite_yaml import MAX_DEPTH, MAX_NODES, MAX_SUITE_BYTES

from conftest import TINY_SUITE, errors_of, one_error

runner = CliRunner()


def write_bytes(tmp_path: Path, raw: bytes) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_bytes(raw)
    return path


def test_three_mistakes_of_different_kinds_are_three_errors(write_suite, tmp_path: Path) -> None:
    text = (TINY_SUITE.replace("  epochs: 2", "  epoch: 2")                       # structure: unknown key
            .replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, msee]")  # component: a typo
            .replace("augmentation: [none, crop]", "augmentation: [none, {name: crop, padding: -1}]"))  # parameter
    path = write_suite(text)
    errors = errors_of(path)
    assert [e.location.path for e in errors] == ["train.epoch", "grid.loss[1]", "grid.augmentation[1].padding"]
    assert all(e.location.line for e in errors)
    out = tmp_path / "results"
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "unknown key 'epoch'" in result.output and "unknown loss 'msee'" in result.output
    assert "padding must be >= 0" in result.output
    assert not out.exists()


def test_a_structure_error_does_not_hide_a_combination_error(write_suite) -> None:
    text = (TINY_SUITE.replace("  epochs: 2", "  epoch: 2").replace("loss: [cross_entropy, mse]", "loss: [mse, triplet]")
            .replace("augmentation: [none, crop]", "augmentation: [none, mixup]"))
    errors = errors_of(write_suite(text))
    assert [e.location.path for e in errors] == ["train.epoch", "grid.loss[1]"]
    assert "takes hard labels only" in errors[1].render() and "mixup" in errors[1].render()


def test_a_structure_error_does_not_hide_component_errors(write_suite) -> None:
    text = TINY_SUITE.replace("batch_size: 64", "batch_size: x").replace("regularizer: [none]", "regularizer: [l3]")
    assert {e.location.path for e in errors_of(write_suite(text))} == {"train.batch_size", "grid.regularizer[0]"}


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("epochs: 2", "epochs: true", "train.epochs"),
        ("batch_size: 64", "batch_size: false", "train.batch_size"),
        ("seeds: [0]", "seeds: [true]", "seeds[0]"),
        ("train_subset: 400", "train_subset: true", "dataset.train_subset"),
        ("loss: [cross_entropy, mse]", "loss: [cross_entropy, {name: focal, gamma: true}]", "grid.loss[1].gamma"),
    ],
)
def test_a_boolean_is_not_a_number(write_suite, old: str, new: str, path: str) -> None:
    err = one_error(write_suite(TINY_SUITE.replace(old, new)))
    assert err.location.path == path and err.location.line is not None
    assert "true" in err.render() or "false" in err.render()


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("loss: [cross_entropy, mse]", "loss: [cross_entropy, {name: focal, gamma: .nan}]", 14),
        ("regularizer: [none]", "regularizer: [none, {name: l2, weight: .inf}]", 15),
        ("lr: 0.05", "lr: .inf", 10),
        ("lr: 0.05", "lr: -.Inf", 10),
    ],
)
def test_numbers_must_be_finite(write_suite, old: str, new: str, line: int) -> None:
    errors = errors_of(write_suite(TINY_SUITE.replace(old, new)))
    assert "not a finite number" in errors[0].render() and errors[0].location.line == line


def test_labels_of_non_finite_values_do_not_crash() -> None:
    assert (_fmt(float("nan")), _fmt(float("inf")), _fmt(float("-inf"))) == ("nan", "inf", "-inf")


@pytest.mark.parametrize(
    ("raw", "offset", "needle"),
    [
        (b"name: caf\xe9\n", 9, "byte 0xe9 at byte offset 9"),
        (b"name: x\n\x89PNG\r\n\x1a\n\x00\x00", 8, "byte 0x89 at byte offset 8"),
    ],
)
def test_non_utf8_is_reported_with_its_byte_offset(tmp_path: Path, raw: bytes, offset: int, needle: str) -> None:
    err = one_error(write_bytes(tmp_path, raw))
    assert needle in err.render() and err.location.line == raw.count(b"\n", 0, offset) + 1


def test_utf16_is_named(tmp_path: Path) -> None:
    err = one_error(write_bytes(tmp_path, TINY_SUITE.encode("utf-16")))
    assert "UTF-16" in err.render() and "UTF-8" in err.render()


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path) -> None:
    assert load_suite(write_bytes(tmp_path, b"\xef\xbb\xbf" + TINY_SUITE.encode())).name == "tiny"


def test_control_characters_are_located(tmp_path: Path) -> None:
    err = one_error(write_bytes(tmp_path, b"name: x\ndescription: a\x07b\n"))
    assert err.location.line == 2 and "U+0007 is not allowed" in err.render()


def test_a_duplicate_key_names_both_lines(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE + "  loss: [mae]\n"))
    assert "key 'loss' appears twice" in err.render() and "lines 14 and 17" in err.render()
    assert err.location.line == 17 and err.location.path == "grid.loss"


def test_an_alias_bomb_is_refused_small(write_suite) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = "\n".join(lines) + "\n" + TINY_SUITE.replace("description", "x").replace("seeds: [0]", "seeds: *a9")
    tracemalloc.start()
    try:
        err = one_error(write_suite(text))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"more than {MAX_NODES:,} values" in err.render() and err.location.line is not None
    assert peak < 50 * 2**20  # 10^10 values would need hundreds of GB; the budget stops it while counting


def test_a_recursive_alias_is_located(write_suite) -> None:
    err = one_error(write_suite("name: x\nseeds: &s [0, *s]\ngrid: {loss: [mae]}\n"))
    assert "recursive alias" in err.render() and err.location.line == 2


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 20_000])
def test_deep_nesting_is_located(write_suite, depth: int) -> None:
    err = one_error(write_suite("name: x\nseeds: " + "[" * depth + "]" * depth + "\n"))
    assert f"nesting deeper than {MAX_DEPTH}" in err.render() and err.location.line == 2


def test_a_huge_suite_file_is_refused_before_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "suite.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 2**20)  # a sparse 50 MB file
    err = one_error(path)
    assert f"larger than {MAX_SUITE_BYTES:,} bytes" in err.render()


def test_a_ten_million_cell_grid_is_refused_without_building_it(write_suite) -> None:
    losses = ", ".join(["cross_entropy", "mse", "mae", "focal", "poly1", "bce", "gce", "sce", "hinge", "rmse"])
    augs = ", ".join(["none", "hflip", "vflip", "crop", "translate", "rotate", "scale", "cutout", "gaussian_noise",
                      "color_jitter"])
    regs = ", ".join(f"{{name: l2, weight: {w}}}" for w in range(1, 11))
    text = (TINY_SUITE.replace("loss: [cross_entropy, mse]", f"loss: [{losses}]")
            .replace("augmentation: [none, crop]", f"augmentation: [{augs}]")
            .replace("regularizer: [none]", f"regularizer: [{regs}]")
            .replace("seeds: [0]", "seeds: [" + ", ".join(str(i) for i in range(1_000)) + "]")
            + "  optimizer: [" + ", ".join(f"{{name: sgd, lr: {i}}}" for i in range(1, 11)) + "]\n")
    tracemalloc.start()
    try:
        err = one_error(write_suite(text))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "10,000,000 cells" in err.render() and f"at most {MAX_CELLS:,}" in err.render()
    assert err.location.path == "grid" and err.location.line == 13
    assert peak < 100 * 2**20  # ten million cells would take gigabytes


@pytest.mark.parametrize(
    ("old", "new", "path", "needle"),
    [
        ("epochs: 2", "epochs: 1e12", "train.epochs", "must be an integer"),
        ("epochs: 2", "epochs: 10001", "train.epochs", "must be <= 10000"),
        ("batch_size: 64", "batch_size: 1e15", "train.batch_size", "must be an integer"),
        ("batch_size: 64", "batch_size: 1000000", "train.batch_size", "must be <= 65536"),
        ("  name: digits\n", "  name: digits\n  image_size: 100000\n", "dataset.image_size", "must be <= 1024"),
        ("seeds: [0]", "seeds: [-1]", "seeds[0]", "must be >= 0"),
        ("seeds: [0]", f"seeds: [{2**70}]", "seeds[0]", "must be <= 4294967295"),
        ("seeds: [0]", "seeds: [0, 1, 0]", "seeds", "seed 0 appears more than once"),
    ],
)
def test_documented_bounds(write_suite, old: str, new: str, path: str, needle: str) -> None:
    err = one_error(write_suite(TINY_SUITE.replace(old, new, 1)))
    assert err.location.path == path and needle in err.render(), err.render()


@pytest.mark.parametrize(
    ("axis_text", "level"),
    [
        ("loss: [cross_entropy, cross_entropy]", 1),
        ("loss: [focal, mse, {name: focal, gamma: 2}]", 2),  # gamma=2 is focal's default: the same cell
        ("loss: [mse]\n  regularizer: [none, [l2, dropout], [l2, dropout]]", 2),
    ],
)
def test_repeated_grid_levels(write_suite, axis_text: str, level: int) -> None:
    text = TINY_SUITE.replace("loss: [cross_entropy, mse]", axis_text)
    if "regularizer: [none," in axis_text:
        text = text.replace("  regularizer: [none]\n", "")
    err = one_error(write_suite(text))
    assert f"[{level}] repeats" in err.render() and "the same cell" in err.render()


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("dataset:\n  name: digits\n  train_subset: 400\n", "dataset: 5\n", "must be a mapping"),
        ("loss: [cross_entropy, mse]", "loss: [{name: [adam]}]", "'name' must be a string"),
        ("loss: [cross_entropy, mse]", "loss: [7]", "expected a component name"),
        ("seeds: [0]", "seeds: 2020-01-01", "must be a list"),
    ],
)
def test_messages_have_no_pydantic_wording_or_object_reprs(write_suite, old: str, new: str, needle: str) -> None:
    rendered = one_error(write_suite(TINY_SUITE.replace(old, new))).render()
    assert needle in rendered, rendered
    for word in ("Value error", "instance of", "Input should", "datetime.", "object at 0x", "DatasetConfig"):
        assert word not in rendered, rendered


def test_model_parameter_errors_point_at_the_parameter(write_suite) -> None:
    err = one_error(write_suite(TINY_SUITE.replace("  name: small_cnn\n", "  name: small_cnn\n  widht: 3\n")))
    assert err.location.path == "model.widht" and err.location.line == 7


def test_nothing_is_written_for_any_of_these(write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_suite(TINY_SUITE.replace("epochs: 2", "epochs: true").replace("lr: 0.05", "lr: .nan"))
    for args in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "out")], ["run", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert os.listdir(work) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("train_subset: 400", "train_subset: 5000", "train_subset = 5,000 but digits has 1,438 training images"),
        ("train_subset: 400", "test_subset: 360", "test_subset = 360 but digits has 359 test images"),
    ],
)
def test_subsets_larger_than_a_known_split(write_suite, old: str, new: str, needle: str) -> None:
    err = one_error(write_suite(TINY_SUITE.replace(old, new)))
    assert needle in err.render() and err.location.line == 4


def test_known_split_sizes_are_the_real_ones(digits) -> None:
    from lossbench.data import DATASETS

    assert DATASETS.get("digits").known_sizes(None) == (len(digits.train_y), len(digits.test_y))
    assert DATASETS.get("cifar10").known_sizes(None) == (50_000, 10_000)
    assert DATASETS.get("cifar10").known_sizes(Path("/some/local/copy")) is None  # a copy may be a subset


def test_a_subset_of_a_local_copy_is_not_judged_by_the_official_size(write_suite, tmp_path: Path) -> None:
    (tmp_path / "copy").mkdir()
    text = TINY_SUITE.replace("  name: digits\n  train_subset: 400\n",
                              f"  name: cifar10\n  root: {tmp_path / 'copy'}\n  train_subset: 60000\n")
    assert load_suite(write_suite(text)).dataset.train_subset == 60_000


def test_an_unusable_data_root_is_located(write_suite, tmp_path: Path) -> None:
    not_data = tmp_path / "notes.txt"
    not_data.write_text("not images")
    path = write_suite(TINY_SUITE.replace("  name: digits\n", f"  name: image_folder\n  root: {not_data}\n"))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "suite.yaml:4:3 at dataset.root:" in result.output, result.output
    result = runner.invoke(app, ["run", str(write_suite(TINY_SUITE.replace("name: digits", "name: image_folder"))),
                                 "--data-root", str(not_data), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"--data-root {not_data}:" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_subset_larger_than_a_local_copy_is_located(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    text = TINY_SUITE.replace("  name: digits\n  train_subset: 400\n",
                              f"  name: image_folder\n  root: {tmp_path / 'images'}\n  train_subset: 50\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(write_suite(text)), "--out", str(out), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 2, result.output
    assert "suite.yaml:5:3 at dataset.train_subset: train_subset = 50" in result.output, result.output
    assert not out.exists()


def test_a_malformed_file_is_refused_before_torch_is_imported(write_suite) -> None:
    # Refusing a YAML bomb or a 50 MB file takes a second and ~50 MB only if torch (seconds, ~700 MB) is not loaded.
    import subprocess
    import sys

    path = write_suite("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"b{i}: &b{i} [" + ", ".join(["*a" if i == 0 else f"*b{i - 1}"] * 10) + "]\n" for i in range(8)) + "name: x\n")
    probe = ("import sys\nfrom typer.testing import CliRunner\nfrom lossbench.cli import app\n"
             f"for command in ('validate', 'run'):\n"
             f"    result = CliRunner().invoke(app, [command, {str(path)!r}])\n"
             "    assert result.exit_code == 2, result.output\n"
             "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
