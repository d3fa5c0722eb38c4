"""OOD detection metrics against scikit-learn, the scores against their definitions, the OOD inputs' shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from lossbench.shift.ood import (GENERATED, auroc, conform, energy_score, fpr_at_tpr, generated_images, msp_score)


def _sklearn_fpr95(pos: np.ndarray, neg: np.ndarray) -> float:
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    fpr, tpr, _ = roc_curve(y, np.r_[pos, neg], drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


@pytest.mark.parametrize("n_pos,n_neg,levels", [(20, 30, None), (37, 11, None), (100, 100, 7), (40, 60, 3),
                                                (1, 5, None), (203, 17, 11)])
def test_auroc_and_fpr95_match_sklearn(n_pos: int, n_neg: int, levels: int | None) -> None:
    rng = np.random.default_rng(n_pos * 1000 + n_neg)
    pos = rng.normal(1.0, 1.0, n_pos)
    neg = rng.normal(0.0, 1.0, n_neg)
    if levels is not None:  # many ties, within and across the classes
        pos, neg = np.round(pos * levels / 3) / levels, np.round(neg * levels / 3) / levels
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    expected_auc = roc_auc_score(y, np.r_[pos, neg])
    assert auroc(torch.tensor(pos), torch.tensor(neg)) == pytest.approx(expected_auc, abs=1e-12)
    assert fpr_at_tpr(torch.tensor(pos), torch.tensor(neg)) == pytest.approx(_sklearn_fpr95(pos, neg), abs=1e-12)


def test_fpr95_exact_at_the_boundary() -> None:
    # 20 positives: the 19th highest keeps exactly 95 %; float 0.95 · 20 = 19.000000000000004 must not round up.
    pos = torch.arange(20, dtype=torch.float64) + 10   # 10 … 29
    neg = torch.tensor([10.5, 11.0, 11.5, 9.0])          # the 19th highest positive is 11
    assert fpr_at_tpr(pos, neg) == pytest.approx(0.5)
    assert _sklearn_fpr95(pos.numpy(), neg.numpy()) == pytest.approx(0.5)


def test_scores() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    assert msp_score(logits).tolist() == pytest.approx([p.max(), 1 / 3])
    assert energy_score(logits).tolist() == pytest.approx([np.log(np.exp([2.0, 0.0, -1.0]).sum()), np.log(3)])


def test_perfect_and_reversed_separation() -> None:
    pos, neg = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])
    assert auroc(pos, neg) == 1.0 and fpr_at_tpr(pos, neg) == 0.0
    assert auroc(neg, pos) == 0.0 and fpr_at_tpr(neg, pos) == 1.0


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_inputs(name: str) -> None:
    a = generated_images(name, 5, (1, 8, 8), seed=3, device=torch.device("cpu"))
    assert a.shape == (5, 1, 8, 8) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, generated_images(name, 5, (1, 8, 8), seed=3, device=torch.device("cpu")))


def test_conform_converts_channels_and_size() -> None:
    rgb = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    rgb[:, 0] = 255  # pure red
    grey = conform(rgb, (1, 8, 8))
    assert grey.shape == (2, 1, 8, 8)
    assert torch.allclose(grey, torch.full_like(grey, 0.299), atol=1e-6)
    back = conform((grey * 255).round().to(torch.uint8), (3, 16, 16))
    assert back.shape == (2, 3, 16, 16) and torch.allclose(back[:, 0], back[:, 2])
