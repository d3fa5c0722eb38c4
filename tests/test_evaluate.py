"""The evaluators of both heads on real digits, with exact ties: one tie rule across every metric."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from lossbench.data import ImageData
from lossbench.device import EngineOptions, Normalizer
from lossbench.embedding_eval import knn_class_scores
from lossbench.evaluate import EmbeddingEvaluator, Evaluator, LogitsEvaluator, evaluator_for
from lossbench.losses import LOSSES, Loss
from lossbench.metrics import predicted_class, topk_correct


@pytest.fixture
def small(digits: ImageData) -> ImageData:
    return replace(digits, train_x=digits.train_x[:300], train_y=digits.train_y[:300],
                   test_x=digits.test_x[:120], test_y=digits.test_y[:120])


def _evaluator(loss: Loss, data: ImageData) -> Evaluator:
    """The loss's evaluator on the CPU: training batches of 64, evaluation batches of 50."""
    return evaluator_for(loss, data, Normalizer(data, torch.device("cpu"), False),
                         EngineOptions(device=torch.device("cpu"), precision="fp32"), batch_size=64, eval_batch_size=50)


def _constant_model(width: int) -> nn.Module:
    """Every image gets the same output (all zeros plus a constant): every row of scores is one big tie."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, width))
    nn.init.zeros_(model[1].weight)
    nn.init.constant_(model[1].bias, 0.25)
    return model


def _ranked(scores: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """Top-k hits by NumPy's stable sort of the negated scores: among ties the lower class index ranks first."""
    order = np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :k]
    return int((order == labels.numpy()[:, None]).any(axis=1).sum())


def test_logit_ties_agree_across_top1_confusion_per_class_and_top5(small: ImageData) -> None:
    loss = LOSSES.build("cross_entropy", {})
    evaluator = _evaluator(loss, small)
    assert isinstance(evaluator, LogitsEvaluator)
    model = _constant_model(10)
    epoch = evaluator.epoch(model)
    final = evaluator.final(model)
    labels = small.test_y
    assert epoch.test_acc == final["test_acc"] == int((labels == 0).sum()) / len(labels)  # class 0 wins every tie
    assert final["test_acc"] == np.trace(np.array(final["confusion"])) / len(labels)
    assert [row[0] for row in final["confusion"]] == np.bincount(labels.numpy(), minlength=10).tolist()
    assert final["test_top5"] == epoch.test_top5 == int((labels < 5).sum()) / len(labels)
    per_class = final["per_class_acc"]
    assert per_class[0] == 1.0 and all(v == 0.0 for v in per_class[1:] if v is not None)
    assert final["train_acc"] == int((small.train_y == 0).sum()) / len(small.train_y)


def test_knn_vote_ties_go_to_the_lower_class() -> None:
    # Query at 0; neighbours by distance: class 2 (rank 0), class 1, class 1, class 2 (rank 3). Rank-weighted
    # votes are exactly equal (1.2 + 1.05 = 1.15 + 1.1 = 2.25): class 1 is predicted.
    reference = torch.tensor([[1.0], [2.0], [3.0], [4.0], [50.0]])
    ref_labels = torch.tensor([2, 1, 1, 2, 0])
    scores = knn_class_scores(torch.tensor([[0.0]]), reference, ref_labels, 3, k=4, metric="euclidean")
    assert scores[0, 1] == scores[0, 2] == 2.25 and scores[0, 0] == 0
    assert predicted_class(scores).tolist() == [1]
    assert topk_correct(scores, torch.tensor([1]), 1).item() == 1
    assert topk_correct(scores, torch.tensor([2]), 1).item() == 0
    assert topk_correct(scores, torch.tensor([2]), 2).item() == 1


def test_embedding_evaluator_ties_agree_with_a_stable_ranking(small: ImageData) -> None:
    loss = LOSSES.build("supcon", {})
    evaluator = _evaluator(loss, small)
    assert isinstance(evaluator, EmbeddingEvaluator) and not evaluator.measures_train_acc
    # All embeddings equal: the k neighbours are some k references, and the classes they leave out tie at 0 votes.
    model = _constant_model(loss.output_dim(10))
    epoch = evaluator.epoch(model)
    final = evaluator.final(model)
    scores = knn_class_scores(loss.embed(evaluator.outputs(model, small.test_x)),
                              loss.embed(evaluator.outputs(model, small.train_x)), small.train_y, 10,
                              k=loss.knn_k, metric=loss.knn_metric)
    labels = small.test_y
    n = len(labels)
    assert final["test_acc"] == epoch.test_acc == _ranked(scores, labels, 1) / n
    assert final["test_acc"] == np.trace(np.array(final["confusion"])) / n
    assert final["test_top5"] == epoch.test_top5 == _ranked(scores, labels, 5) / n
    assert any("k-NN" in note for note in evaluator.notes("supcon"))
