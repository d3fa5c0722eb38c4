"""Evaluation of embeddings by retrieval against a reference set (the training-set embeddings).

Queries and references are [N, D] tensors on one device; similarities are computed in query batches of
`batch_size` rows ([batch_size, N_ref] floats each), so memory stays bounded for any N. Outputs are tensors on
that device; the caller syncs once.

- k-NN class scores: each of the k nearest references votes for its class with weight 1 + (k − r)/(k·(k + 1))
  for rank r = 0..k−1. The rank terms add up to ½ at most, so they never overturn a difference in counts; they
  only break ties in favour of the class whose neighbours are nearer. Argmax = majority vote.
- k-NN probabilities: votes with add-one smoothing, p_c = (v_c + 1) / (Σ_c v_c + C): never 0, so NLL is finite.
- precision@1: the fraction of queries whose nearest reference has the query's label.
- MAP@R (Musgrave et al. 2020): with R the number of references of the query's class, the mean over queries of
  (1/R)·Σ_{i≤R} P(i)·rel(i), P(i) the precision among the first i retrieved and rel(i) whether the i-th is of
  the query's class.

Distances: `cosine` ranks by cosine similarity; `euclidean` by euclidean distance (computed as 2·q·r − |r|²,
which orders references exactly as −|q − r|² does). With `exclude_self` the queries are the references
themselves (row i of the queries is row i of the references), and each query's own row is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Metric = Literal["cosine", "euclidean"]

#: The k-NN rule for embedding heads whose loss does not set one.
DEFAULT_K = 10
DEFAULT_METRIC: Metric = "cosine"


#: The retrieval metrics an embedding head records (and a logits head does not).
RETRIEVAL_METRICS = ("precision_at_1", "map_at_r")

@dataclass
class RetrievalResult:
    """k-NN class scores [N, C], precision@1 and MAP@R (0-d tensors, in [0, 1]) of a query set."""

    scores: torch.Tensor
    precision_at_1: torch.Tensor
    map_at_r: torch.Tensor


def _prepare(x: torch.Tensor, metric: Metric) -> torch.Tensor:
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
    x = x.float()
    return F.normalize(x, dim=1) if metric == "cosine" else x


def _neighbour_batches(
    queries: torch.Tensor,
    reference: torch.Tensor,
    n: int,
    metric: Metric,
    batch_size: int,
    exclude_self: bool,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, indices [b, n]) of the n nearest references of each query batch, nearest first."""
    if exclude_self and queries.shape[0] != reference.shape[0]:
        raise ValueError("exclude_self needs the queries to be the references")
    q_all, ref = _prepare(queries, metric), _prepare(reference, metric)
    ref_sq = ref.square().sum(1) if metric == "euclidean" else None
    for start in range(0, q_all.shape[0], batch_size):
        q = q_all[start : start + batch_size]
        sim = q @ ref.T
        if ref_sq is not None:
            sim = 2.0 * sim - ref_sq[None, :]
        if exclude_self:
            rows = torch.arange(q.shape[0], device=q.device)
            sim[rows, start + rows] = float("-inf")
        yield start, sim.topk(n, dim=1).indices


def _vote_scores(neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    k = neighbour_labels.shape[1]
    rank = torch.arange(k, device=neighbour_labels.device, dtype=torch.float32)
    weight = 1.0 + (k - rank) / (k * (k + 1))
    scores = torch.zeros(neighbour_labels.shape[0], num_classes, device=neighbour_labels.device)
    return scores.scatter_add_(1, neighbour_labels, weight.expand_as(neighbour_labels).contiguous())


def _usable_k(k: int, n_reference: int, exclude_self: bool) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    available = n_reference - (1 if exclude_self else 0)
    if available < 1:
        raise ValueError("k-NN needs at least one reference embedding")
    return min(k, available)


def knn_class_scores(
    queries: torch.Tensor,
    reference: torch.Tensor,
    reference_labels: torch.Tensor,
    num_classes: int,
    *,
    k: int = DEFAULT_K,
    metric: Metric = DEFAULT_METRIC,
    batch_size: int = 2048,
    exclude_self: bool = False,
) -> torch.Tensor:
    """[N, C] rank-weighted vote scores of the k nearest references (k is capped at the number of references)."""
    k = _usable_k(k, reference.shape[0], exclude_self)
    out = torch.empty(queries.shape[0], num_classes, device=queries.device)
    for start, idx in _neighbour_batches(queries, reference, k, metric, batch_size, exclude_self):
        out[start : start + idx.shape[0]] = _vote_scores(reference_labels[idx], num_classes)
    return out


def knn_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Class probabilities from k-NN vote scores by add-one smoothing: (v_c + 1) / (Σ_c v_c + C)."""
    return (scores + 1.0) / (scores.sum(dim=1, keepdim=True) + scores.shape[1])


def evaluate_retrieval(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    reference: torch.Tensor,
    reference_labels: torch.Tensor,
    num_classes: int,
    *,
    k: int = DEFAULT_K,
    metric: Metric = DEFAULT_METRIC,
    batch_size: int = 2048,
    exclude_self: bool = False,
) -> RetrievalResult:
    """k-NN class scores, precision@1 and MAP@R of the queries against the references, in one pass.

    Queries whose class has no reference (R = 0) are left out of MAP@R.
    """
    k = _usable_k(k, reference.shape[0], exclude_self)
    counts = torch.bincount(reference_labels, minlength=num_classes)
    r = counts[query_labels] - (1 if exclude_self else 0)
    n = max(k, int(r.max().item()) if r.numel() else 0)
    n = min(n, reference.shape[0] - (1 if exclude_self else 0))
    scores = torch.empty(queries.shape[0], num_classes, device=queries.device)
    hits_at_1 = torch.zeros((), device=queries.device)
    ap_sum = torch.zeros((), device=queries.device)
    positions = torch.arange(1, n + 1, device=queries.device, dtype=torch.float32)
    for start, idx in _neighbour_batches(queries, reference, n, metric, batch_size, exclude_self):
        stop = start + idx.shape[0]
        labels = reference_labels[idx]
        scores[start:stop] = _vote_scores(labels[:, :k], num_classes)
        relevant = (labels == query_labels[start:stop, None]).float()
        hits_at_1 += relevant[:, 0].sum()
        r_batch = r[start:stop]
        within_r = positions[None, :] <= r_batch[:, None]
        precision = relevant.cumsum(dim=1) / positions
        ap_sum += ((precision * relevant * within_r).sum(1) / r_batch.clamp(min=1)).sum()
    with_relevant = (r > 0).sum().clamp(min=1)
    return RetrievalResult(scores, hits_at_1 / max(queries.shape[0], 1), ap_sum / with_relevant)
