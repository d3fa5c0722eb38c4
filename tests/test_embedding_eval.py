"""k-NN evaluation of embeddings: class scores on toy embeddings with known answers, precision@1 and MAP@R on
hand-worked examples, and an embedding cell through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.config.dataset import DatasetConfig
from lossbench.config.schema import Suite
from lossbench.embedding_eval import evaluate_retrieval, knn_class_scores, knn_probabilities
from lossbench.device import EngineOptions
from lossbench.execution import train_cell
from lossbench.grid import expand

from conftest import with_recipe


def _clusters() -> tuple[torch.Tensor, torch.Tensor]:
    """Three tight clusters of three points in the plane, at angles 0°, 120° and 240°; labels 0, 1, 2."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[math.cos(a), math.sin(a)] for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)])
    points = centres.repeat_interleave(3, dim=0) + 0.01 * torch.randn(9, 2, generator=g)
    return points, torch.arange(3).repeat_interleave(3)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_on_separated_clusters(metric: str) -> None:
    reference, labels = _clusters()
    queries = torch.tensor([[2.0, 0.1], [-0.5, 0.8], [-0.4, -0.9]])
    scores = knn_class_scores(queries, reference, labels, 3, k=3, metric=metric)  # type: ignore[arg-type]
    # All three neighbours of each query are its own cluster: vote 3 plus rank terms (3 + 2 + 1)/(3·4) = ½.
    expected = torch.diag(torch.full((3,), 3.5))
    torch.testing.assert_close(scores, expected)
    probs = knn_probabilities(scores)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    torch.testing.assert_close(probs[0], torch.tensor([4.5, 1.0, 1.0]) / 6.5)


def test_rank_terms_break_ties_towards_nearer_neighbours() -> None:
    # One neighbour of each class: the nearer one (class 1) must win the 1–1 tie.
    reference = torch.tensor([[0.0], [1.0], [3.0]])
    labels = torch.tensor([1, 0, 2])
    scores = knn_class_scores(torch.tensor([[0.2]]), reference, labels, 3, k=2, metric="euclidean")
    assert scores.argmax(1).item() == 1
    torch.testing.assert_close(scores[0], torch.tensor([1.0 + 1 / 6, 1.0 + 2 / 6, 0.0]))
    # But counts always beat rank terms: two far neighbours of class 0 outvote one near neighbour of class 1.
    reference = torch.tensor([[0.0], [1.0], [1.1]])
    scores = knn_class_scores(torch.tensor([[0.2]]), reference, torch.tensor([1, 0, 0]), 2, k=3, metric="euclidean")
    assert scores.argmax(1).item() == 0


def test_cosine_and_euclidean_disagree_where_they_should() -> None:
    reference = torch.tensor([[10.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    query = torch.tensor([[1.0, 0.2]])
    # By angle the query is nearest to (10, 0); by distance to (1, 1).
    assert knn_class_scores(query, reference, labels, 2, k=1, metric="cosine").argmax(1).item() == 0
    assert knn_class_scores(query, reference, labels, 2, k=1, metric="euclidean").argmax(1).item() == 1


def test_batching_and_leave_one_out() -> None:
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(50, 4, generator=g)
    labels = torch.randint(0, 3, (50,), generator=g)
    whole = knn_class_scores(reference, reference, labels, 3, k=5, batch_size=1000, exclude_self=True)
    batched = knn_class_scores(reference, reference, labels, 3, k=5, batch_size=7, exclude_self=True)
    torch.testing.assert_close(whole, batched)
    # Leave-one-out by hand: cosine similarities with the diagonal removed.
    unit = torch.nn.functional.normalize(reference, dim=1)
    sims = unit @ unit.T
    sims.fill_diagonal_(-2.0)
    nearest = sims.topk(5, dim=1).indices
    expected = torch.zeros(50, 3)
    for i in range(50):
        for rank, j in enumerate(nearest[i].tolist()):
            expected[i, labels[j]] += 1 + (5 - rank) / 30
    torch.testing.assert_close(whole, expected)
    # Without exclusion every point finds itself first.
    with_self = evaluate_retrieval(reference, labels, reference, labels, 3, k=5)
    assert with_self.precision_at_1.item() == 1.0


def test_precision_at_1_and_map_at_r_by_hand() -> None:
    # References on a line: 1:A, 2:B, 3:A, 4:A, 5:B (A = 0, B = 1); R = 3 for class A, 2 for class B.
    reference = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    ref_labels = torch.tensor([0, 1, 0, 0, 1])
    queries = torch.tensor([[0.0], [10.0], [0.0]])
    query_labels = torch.tensor([0, 1, 1])
    # Query 1 (A at 0): retrieved A, B, A → (1/3)·(1/1 + 0 + 2/3) = 5/9; nearest is A.
    # Query 2 (B at 10): retrieved B, A → (1/2)·(1/1 + 0) = 1/2; nearest is B.
    # Query 3 (B at 0): retrieved A, B → (1/2)·(0 + 1/2) = 1/4; nearest is A (a miss).
    result = evaluate_retrieval(queries, query_labels, reference, ref_labels, 2, k=1, metric="euclidean")
    assert result.precision_at_1.item() == pytest.approx(2 / 3)
    assert result.map_at_r.item() == pytest.approx((5 / 9 + 1 / 2 + 1 / 4) / 3)
    torch.testing.assert_close(result.scores, torch.tensor([[1.5, 0.0], [0.0, 1.5], [1.5, 0.0]]))
    # Batching does not change anything.
    small = evaluate_retrieval(queries, query_labels, reference, ref_labels, 2, k=1, metric="euclidean", batch_size=1)
    assert small.map_at_r.item() == pytest.approx(result.map_at_r.item())


def test_map_at_r_leave_one_out_and_empty_classes() -> None:
    # Leave-one-out on the references themselves (positions chosen without distance ties):
    # 1:A, 2:B, 3.3:A, 4:A, 5.5:B. Per query, its R, what it retrieves first, and AP@R:
    #   1 (A, R=2): 2:B, 3.3:A → (0 + 1/2)/2 = 1/4      2 (B, R=1): 1:A → 0
    #   3.3 (A, R=2): 4:A, 2:B → (1 + 0)/2 = 1/2        4 (A, R=2): 3.3:A, 5.5:B → 1/2
    #   5.5 (B, R=1): 4:A → 0
    reference = torch.tensor([[1.0], [2.0], [3.3], [4.0], [5.5]])
    labels = torch.tensor([0, 1, 0, 0, 1])
    result = evaluate_retrieval(reference, labels, reference, labels, 2, k=1, metric="euclidean", exclude_self=True)
    assert result.map_at_r.item() == pytest.approx((1 / 4 + 0 + 1 / 2 + 1 / 2 + 0) / 5)
    assert result.precision_at_1.item() == pytest.approx(2 / 5)
    # A query whose class has no reference is left out of MAP@R (but counts as a miss for precision@1).
    none = evaluate_retrieval(torch.tensor([[0.0]]), torch.tensor([2]), reference, labels, 3, k=1, metric="euclidean")
    assert none.map_at_r.item() == 0.0 and none.precision_at_1.item() == 0.0


def test_embedding_cell_reports_knn_metrics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from lossbench.data import load_dataset

    torch.set_num_threads(1)
    data = load_dataset(DatasetConfig(name="digits", train_subset=400), cache_dir=tmp_path)
    suite = Suite.model_validate({
        "name": "knn-test",
        "dataset": {"name": "digits"},
        "model": {"name": "small_cnn"},
        "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 3e-3}},
        "grid": {"loss": [{"name": "triplet", "knn_k": 1, "embedding_dim": 32}]},
    })
    cell = expand(suite, data.identity)[0]
    result = train_cell(with_recipe(cell, epochs=2, batch_size=32), data, EngineOptions(torch.device("cpu"), "fp32"))
    assert result.status == "done", result.traceback
    m = result.metrics
    # With k = 1 the k-NN prediction is the nearest neighbour: test accuracy is precision@1.
    assert m["test_acc"] == pytest.approx(m["precision_at_1"])
    assert m["knn_k"] == 1 and m["knn_metric"] == "cosine"
    # The last epoch's k-NN accuracy is the final one: same model, same reference set.
    assert result.history[-1].test_acc == pytest.approx(m["test_acc"])
    assert m["test_acc"] > 0.5 and 0 < m["map_at_r"] <= 1 and 0 <= m["train_acc"] <= 1
    assert len(m["confusion"]) == 10 and sum(map(sum, m["confusion"])) == data.test_y.shape[0]
    assert math.isfinite(m["test_nll"]) and math.isfinite(m["test_loss"])
