"""The `evaluate:` block: validation, cell ids, the metrics it computes (checked against sklearn and numpy on
the same model outputs) and their place in a run's cell records."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from lossbench.config.schema import suite_to_yaml
from lossbench.suite import load_suite
from lossbench.errors import ConfigError, SuiteErrors
from lossbench.grid import expand

from conftest import TINY_SUITE

EVALUATE = """\
evaluate:
  corruptions: {names: [contrast, gaussian_noise], severities: [1, 5]}
  ood: [uniform_noise]
"""


def _errors(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    return info.value.errors if isinstance(info.value, SuiteErrors) else [info.value]


def test_bad_evaluate_block_is_refused_with_locations(write_suite) -> None:
    path = write_suite(TINY_SUITE + textwrap.dedent("""\
        evaluate:
          corruptions: {names: [gausian_noise, contrast, contrast], severities: [1, 6, 1]}
          ood: [svhnn, {name: digits}, {name: uniform_noise, scale: 2}, {name: cifar100, rooot: /x}]
        """))
    errors = {e.location.path: e for e in _errors(path)}
    assert errors["evaluate.corruptions.names[0]"].suggestion == "gaussian_noise"
    assert errors["evaluate.corruptions.names[0]"].location.line == 18
    assert "twice" in errors["evaluate.corruptions.names[2]"].message
    assert errors["evaluate.corruptions.severities[1]"].allowed == ["1", "2", "3", "4", "5"]
    assert "twice" in errors["evaluate.corruptions.severities[2]"].message
    assert errors["evaluate.ood[0]"].suggestion == "svhn"
    assert "training dataset itself" in errors["evaluate.ood[1]"].message
    assert "scale" in errors["evaluate.ood[2].scale"].message
    assert errors["evaluate.ood[3].rooot"].suggestion == "root"


#: The corruptions a suite's evaluate: block names in the README and the issue that asked for the block.
ISSUE_CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "contrast", "brightness",
                     "jpeg_compression", "pixelate", "saturate", "spatter"]


def test_every_documented_corruption_validates_and_a_typo_is_named(write_suite) -> None:
    names = ", ".join(ISSUE_CORRUPTIONS)
    suite = load_suite(write_suite(TINY_SUITE + f"evaluate:\n  corruptions: {{names: [{names}]}}\n"))
    assert suite.evaluate.corruptions.names == ISSUE_CORRUPTIONS
    path = write_suite(TINY_SUITE + "evaluate:\n  corruptions: {names: [contrast, spater]}\n", name="typo.yaml")
    [error] = _errors(path)
    assert error.location.path == "evaluate.corruptions.names[1]" and error.suggestion == "spatter"
    assert "spatter" in error.allowed


def test_embedding_heads_and_packs_are_refused(write_suite) -> None:
    path = write_suite(TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy, supcon]")
                       .replace("  device: cpu", "  device: cpu\n  pack: 2") + EVALUATE)
    messages = {e.location.path: e.message for e in _errors(path)}
    assert "embedding head" in messages["grid.loss[1]"]
    assert "batched model" in messages["train.pack"]


def test_unusable_ood_root_is_located(write_suite, tmp_path: Path) -> None:
    from lossbench.errors import DataError
    from lossbench.runner import plan

    suite = load_suite(write_suite(TINY_SUITE + "evaluate:\n  ood: [{name: svhn, root: /nonexistent/svhn}]\n"))
    with pytest.raises(DataError) as info:
        plan(suite, tmp_path / "out")
    assert info.value.location.path == "evaluate.ood[0]" and info.value.location.line == 18


def test_evaluate_block_round_trips_and_leaves_cell_ids_alone(write_suite, tmp_path: Path) -> None:
    plain = load_suite(write_suite())
    with_block = load_suite(write_suite(TINY_SUITE + EVALUATE, name="with.yaml"))
    assert [c.id for c in expand(plain, "x")] == [c.id for c in expand(with_block, "x")]
    again = tmp_path / "again.yaml"
    again.write_text(suite_to_yaml(with_block))
    assert load_suite(again) == with_block


def _ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(bins):
        inside = (conf > b / bins) & (conf <= (b + 1) / bins)
        if inside.any():
            total += inside.sum() / len(labels) * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    return total


def test_scores_match_sklearn_on_the_same_outputs(digits) -> None:
    """ShiftPlan.score against accuracy, NLL, ECE and AUROC computed by sklearn/numpy from the model's outputs on
    corrupted images made independently (contrast is deterministic)."""
    from lossbench.device import Normalizer
    from lossbench.device import EngineOptions
    from lossbench.losses import LOSSES
    from lossbench.models import MODELS, DropoutPlacement, ModelFacts
    from lossbench.shift.corruptions import corrupt
    from lossbench.shift.evaluate import OOD_SEED, OodSource, ShiftPlan
    from lossbench.shift.ood import generated_images

    torch.manual_seed(0)
    model = MODELS.build("tutorial_cnn", {}).build(ModelFacts(1, (8, 8), 10, DropoutPlacement()))
    loss = LOSSES.build("cross_entropy", {})
    options = EngineOptions(device=torch.device("cpu"), precision="fp32")
    plan = ShiftPlan(corruptions=("contrast", "gaussian_noise"), severities=(2, 4), ood=(OodSource("uniform_noise"),))
    block = plan.score(model, loss, digits, options, eval_batch_size=100)
    norm = Normalizer(digits, torch.device("cpu"), False)
    model.eval()
    labels = digits.test_y.numpy()

    def probs_of(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> np.ndarray:
        with torch.no_grad():
            return model(norm.standardize(x)).to(dtype).softmax(1).numpy()

    clean = probs_of(norm.to_unit(digits.test_x))
    assert block["clean"]["acc"] == pytest.approx(accuracy_score(labels, clean.argmax(1)))
    for severity in (2, 4):
        p = probs_of(corrupt(norm.to_unit(digits.test_x), "contrast", severity))
        got = block["corruptions"]["contrast"][str(severity)]
        assert got["acc"] == pytest.approx(accuracy_score(labels, p.argmax(1)))
        assert got["nll"] == pytest.approx(log_loss(labels, p, labels=list(range(10))), rel=1e-4)
        assert got["ece"] == pytest.approx(_ece(p, labels), abs=1e-5)
    # Gaussian noise lowers accuracy more at severity 4 than 2 (random, but 360 images and σ 0.12 vs 0.26).
    noise = block["corruptions"]["gaussian_noise"]
    assert noise["4"]["acc"] <= noise["2"]["acc"]
    # OOD: the in-distribution test split against the same uniform-noise images, scored by MSP.
    # (MSP in float32 as scored: near-equal probabilities must rank the same way on both sides.)
    ood = probs_of(generated_images("uniform_noise", len(labels), (1, 8, 8), OOD_SEED, torch.device("cpu")),
                   torch.float32)
    clean32 = probs_of(norm.to_unit(digits.test_x), torch.float32)
    y = np.r_[np.ones(len(labels)), np.zeros(len(ood))]
    assert block["ood"]["uniform_noise"]["auroc_msp"] == pytest.approx(
        roc_auc_score(y, np.r_[clean32.max(1), ood.max(1)]), abs=1e-9)
    # The same inputs again give the same numbers (corruption draws are seeded by corruption, severity, chunk).
    again = plan.score(model, loss, digits, options, eval_batch_size=100)
    assert again["corruptions"] == block["corruptions"] and again["ood"] == block["ood"]


def test_run_records_shift_metrics(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    from lossbench import runner
    from lossbench.analysis.measures import MEASURES
    from lossbench.shift.evaluate import SUMMARY_METRICS

    suite = load_suite(write_suite(TINY_SUITE.replace("augmentation: [none, crop]", "augmentation: [none]")
                                   .replace("epochs: 2", "epochs: 1") + EVALUATE))
    summary = runner.run(runner.plan(suite, tmp_path / "out", cache_dir=cache_dir))
    assert summary.ran == 2 and summary.failed == 0
    for record in summary.records:
        shift = record.metrics.shift
        assert set(shift.corruptions) == {"contrast", "gaussian_noise"}
        assert set(shift.corruptions["contrast"]) == {"1", "5"}
        for name in SUMMARY_METRICS:
            assert isinstance(record.value(name), float) and name in MEASURES
        entries = [e.acc for per in shift.corruptions.values() for e in per.values()]
        assert record.metrics.corrupt_acc == pytest.approx(sum(entries) / 4)
        assert "evaluate" not in record.config


def test_seed_target_on_a_shift_metric_needs_the_block(write_suite) -> None:
    adaptive = TINY_SUITE.replace("seeds: [0]", "seeds: {min: 2, max: 3, target: {metric: corrupt_acc, half_width: 1}}")
    (error,) = _errors(write_suite(adaptive))
    assert error.location.path == "seeds.target.metric" and "no corruptions" in error.message
    assert load_suite(write_suite(adaptive + EVALUATE, name="ok.yaml")).adaptive.target.metric == "corrupt_acc"


def test_run_stamps_the_checkpoint_hash(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    import hashlib

    from lossbench import runner
    from lossbench.checkpoint import checkpoint_path

    suite = load_suite(write_suite(TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy]")
                                   .replace("augmentation: [none, crop]", "augmentation: [none]")
                                   .replace("epochs: 2", "epochs: 1") + EVALUATE))
    (record,) = runner.run(runner.plan(suite, tmp_path / "out", cache_dir=cache_dir)).records
    sha = hashlib.sha256(checkpoint_path(tmp_path / "out", record.id).read_bytes()).hexdigest()
    assert record.metrics.shift_checkpoint_sha256 == sha == record.metrics.shift.checkpoint_sha256
    assert record.metrics.shift.evaluations[-1].checkpoint_sha256 == sha


def test_lossbench_evaluate_adds_metrics_without_retraining(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    """`lossbench evaluate DIR --suite FILE`: the cell files keep their training results and earlier shift
    entries, gain the new block's entries with the checkpoint's sha256; rescoring the run's own block from the
    checkpoint gives the numbers the run scored on the model in memory."""
    import hashlib
    import json

    from typer.testing import CliRunner

    from lossbench import runner
    from lossbench.checkpoint import checkpoint_path
    from lossbench.cli import app

    tiny = (TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy]")
            .replace("augmentation: [none, crop]", "augmentation: [none]").replace("epochs: 2", "epochs: 1"))
    out = tmp_path / "out"
    suite = load_suite(write_suite(tiny + EVALUATE))
    (trained,) = runner.run(runner.plan(suite, out, cache_dir=cache_dir)).records
    before = json.loads((out / "cells" / f"{trained.id}.json").read_text())
    other = write_suite(tiny + "evaluate:\n  corruptions: {names: [pixelate], severities: [2]}\n  ood: [blank]\n",
                        name="other.yaml")
    cli = CliRunner()
    result = cli.invoke(app, ["evaluate", str(out), "--suite", str(other), "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert "scored 1 cell(s)" in result.output
    after = json.loads((out / "cells" / f"{trained.id}.json").read_text())
    assert {k for k in before if before[k] != after[k]} == {"metrics"}
    kept = {k: v for k, v in before["metrics"].items() if not k.startswith(("shift", "corrupt_", "ood_"))}
    assert {k: after["metrics"][k] for k in kept} == kept
    shift = after["metrics"]["shift"]
    assert shift["corruptions"]["contrast"] == before["metrics"]["shift"]["corruptions"]["contrast"]
    assert set(shift["corruptions"]["pixelate"]) == {"2"} and set(shift["ood"]) == {"uniform_noise", "blank"}
    sha = hashlib.sha256(checkpoint_path(out, trained.id).read_bytes()).hexdigest()
    assert [e["checkpoint_sha256"] for e in shift["evaluations"]] == [sha, sha]
    assert after["metrics"]["shift_checkpoint_sha256"] == sha
    # The run's own block again, from the checkpoint: the same numbers as on the model in memory.
    result = cli.invoke(app, ["evaluate", str(out), "--cache-dir", str(cache_dir), "--no-report"])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "cells" / f"{trained.id}.json").read_text())["metrics"]["shift"]
    assert again["corruptions"]["contrast"] == before["metrics"]["shift"]["corruptions"]["contrast"]
    assert again["corruptions"]["gaussian_noise"] == before["metrics"]["shift"]["corruptions"]["gaussian_noise"]
    assert again["ood"]["uniform_noise"] == before["metrics"]["shift"]["ood"]["uniform_noise"]
    assert len(again["evaluations"]) == 3


def test_lossbench_evaluate_bad_input(write_suite, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lossbench.cli import app

    cli = CliRunner()
    result = cli.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "not a lossbench results directory" in result.output
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / ".lossbench").write_text("")
    result = cli.invoke(app, ["evaluate", str(tmp_path / "res"), "--suite", str(write_suite())])
    assert result.exit_code == 2 and "no evaluate: block" in result.output


def test_tensorboard_shows_the_shift_summaries(write_suite, tmp_path: Path, cache_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from lossbench.cli import app

    pytest.importorskip("tensorboard")
    from test_tensorboard import _read

    suite = write_suite(TINY_SUITE.replace("loss: [cross_entropy, mse]", "loss: [cross_entropy]")
                        .replace("augmentation: [none, crop]", "augmentation: [none]").replace("epochs: 2", "epochs: 1")
                        + EVALUATE)
    log_dir, out = tmp_path / "tb", tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(suite), "--out", str(out), "--tensorboard", str(log_dir),
                                      "--no-report", "--plain", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    record = json.loads(next((out / "cells").glob("*.json")).read_text())
    [experiment] = list(log_dir.iterdir())
    [run_dir] = list(experiment.iterdir())
    acc = _read(run_dir)
    for name in ("corrupt_acc", "ood_auroc_msp"):
        assert acc.Scalars(f"final/{name}")[0].value == pytest.approx(record["metrics"][name], rel=1e-6)
