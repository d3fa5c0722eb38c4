"""Metric-learning losses on an embedding head: the model outputs a D-dimensional vector per image.

Each loss compares the pairs of one batch: two images of the same class are a positive pair, of different
classes a negative pair. Embeddings are L2-normalized first (distances then lie in [0, 2]); contrastive and
triplet can also work on raw embeddings (`normalize: false`, as in Hermans et al. 2017). Predictions come from
k-NN against the training-set embeddings (see `lossbench.embedding_eval`), as the loss compares them (normalized
or not), with `knn_k` neighbours by `knn_metric`; on normalized embeddings cosine and euclidean rank alike.

Batch composition: a loss needs at least two images of a class in a batch to form a positive pair; anchors
without one simply do not contribute. Plain shuffling covers that at the default batch size: with 10 balanced
classes and 128 images per batch, a class has 12.8 images on average, and the chance that some class of a batch
has fewer than two is about 2·10⁻⁴. With 100 classes at the same batch size only about a third of the classes
in a batch have a positive pair, and the losses train on those; raise the batch size for such datasets.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from lossbench.losses import LOSSES
from lossbench.losses.base import Loss

# Stand-in for "no candidate" in masked maxima of distances (which are >= 0); the masked minima use a value
# beyond the batch's largest distance. Unlike ±inf, finite stand-ins keep every product finite.
_NEAR = -1.0

Metric = Literal["cosine", "euclidean"]


class EmbeddingLoss(Loss):
    """Base of the embedding losses: the head width, the k-NN rule, normalization and the pair masks."""

    head = "embedding"
    soft_targets = False
    probabilistic = False

    def __init__(
        self, embedding_dim: int = 128, knn_k: int = 10, knn_metric: Metric = "cosine", normalize: bool = True
    ):
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        if knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {knn_k}")
        if knn_metric not in ("cosine", "euclidean"):
            raise ValueError(f"knn_metric must be cosine or euclidean, got {knn_metric!r}")
        self.embedding_dim, self.knn_k, self.knn_metric = embedding_dim, knn_k, knn_metric
        self.normalize = normalize

    def embed(self, outputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(outputs, dim=1) if self.normalize else outputs

    def _check_margin(self, margin: float) -> None:
        if self.normalize and not 0.0 < margin <= 2.0:
            raise ValueError(f"margin is a distance between unit vectors: in (0, 2], got {margin}")
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")

    def hard(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.pair_loss(self.embed(outputs), labels)

    def soft(self, outputs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} compares labels of pairs and takes hard labels only")

    def pair_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of embeddings z [B, D] (as `embed` returns them) with labels [B]."""
        raise NotImplementedError


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean [B, B] masks: same label and not the same sample; different label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def pairwise_distances(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared, plain) euclidean distances [B, B]: d² = |a|² + |b|² − 2·a·b, clamped at 0 against rounding.

    The square root is taken of d² clamped at 1e-12, so its gradient stays finite for coincident vectors.
    """
    sq = z.square().sum(dim=1)
    squared = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T).clamp(min=0.0)
    return squared, squared.clamp(min=1e-12).sqrt()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds; 0 (still attached to the graph) where it holds nowhere."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


@LOSSES.register("contrastive")
class Contrastive(EmbeddingLoss):
    """Contrastive loss (Hadsell et al. 2006) over all pairs in the batch: ½·d² for positives, ½·max(0, m − d)² for negatives.

    The positive and the negative term are each averaged over their pairs and then added, so the many negative
    pairs of a batch do not drown out the few positive ones. d is the euclidean distance of the embeddings,
    L2-normalized unless `normalize` is false.
    """

    def __init__(
        self,
        margin: float = 1.0,
        normalize: bool = True,
        embedding_dim: int = 128,
        knn_k: int = 10,
        knn_metric: Metric = "cosine",
    ):
        super().__init__(embedding_dim, knn_k, knn_metric, normalize)
        self._check_margin(margin)
        self.margin = margin

    def pair_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive, negative = pair_masks(labels)
        squared, distance = pairwise_distances(z)
        pull = _masked_mean(0.5 * squared, positive)
        push = _masked_mean(0.5 * (self.margin - distance).clamp(min=0.0).square(), negative)
        return pull + push


@LOSSES.register("triplet")
class Triplet(EmbeddingLoss):
    """Triplet loss max(0, d(a,p) − d(a,n) + m), triplets mined in the batch (all, batch_hard, semi_hard).

    d is the euclidean distance of the embeddings, L2-normalized unless `normalize` is false.

    all: every valid triplet, averaged over those with a positive loss (Hermans et al. 2017's "batch all ≠ 0").
    batch_hard: per anchor, its farthest positive and nearest negative (Hermans et al. 2017).
    semi_hard (default): per positive pair, the nearest negative farther than the positive,
      d(a,p) < d(a,n) < d(a,p) + m; where none exists, the farthest negative (Schroff et al. 2015, as TensorFlow
      Addons implements it).
    Hardest negatives from the first step can collapse a network trained from scratch (Schroff et al. warn of
    it): with batch_hard, tutorial_cnn on CIFAR-10 (3 epochs on 5,000 images, Adam 1e-3) stalled with its loss
    at the margin and k-NN accuracy at chance, where semi_hard and all trained. Hence semi_hard is the default.
    Memory: all and semi_hard hold a [B, B, B] tensor (8 MiB at B = 128).
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: Literal["all", "batch_hard", "semi_hard"] = "semi_hard",
        normalize: bool = True,
        embedding_dim: int = 128,
        knn_k: int = 10,
        knn_metric: Metric = "cosine",
    ):
        super().__init__(embedding_dim, knn_k, knn_metric, normalize)
        self._check_margin(margin)
        if mining not in ("all", "batch_hard", "semi_hard"):
            raise ValueError(f"mining must be all, batch_hard or semi_hard, got {mining!r}")
        self.margin, self.mining = margin, mining

    def pair_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive, negative = pair_masks(labels)
        _, d = pairwise_distances(z)
        far = d.detach().max() + self.margin + 1.0
        if self.mining == "batch_hard":
            hardest_pos = torch.where(positive, d, torch.full_like(d, _NEAR)).max(dim=1).values
            hardest_neg = torch.where(negative, d, far).min(dim=1).values
            valid = positive.any(dim=1) & negative.any(dim=1)
            return _masked_mean((hardest_pos - hardest_neg + self.margin).clamp(min=0.0), valid)
        d_ap = d[:, :, None]  # [anchor, positive, 1]
        d_an = d[:, None, :]  # [anchor, 1, negative]
        if self.mining == "all":
            valid = positive[:, :, None] & negative[:, None, :]
            losses = (d_ap - d_an + self.margin).clamp(min=0.0)
            return _masked_mean(losses, valid & (losses > 0))
        semi = negative[:, None, :] & (d_an > d_ap) & (d_an < d_ap + self.margin)
        nearest_semi = torch.where(semi, d_an.expand(semi.shape), far).min(dim=2).values
        farthest_neg = torch.where(negative, d, torch.full_like(d, _NEAR)).max(dim=1).values
        chosen = torch.where(semi.any(dim=2), nearest_semi, farthest_neg[:, None].expand_as(nearest_semi))
        valid = positive & negative.any(dim=1, keepdim=True)
        return _masked_mean((d - chosen + self.margin).clamp(min=0.0), valid)


@LOSSES.register("supcon")
class SupervisedContrastive(EmbeddingLoss):
    """Supervised contrastive loss (Khosla et al. 2020, L_out): −mean_p log softmax_{a≠i}(z_i·z_a/τ)[p] over positives p.

    Embeddings are L2-normalized; one view per image (the batch as the engine draws it, augmented once); anchors
    without a positive in the batch are left out of the mean. τ is `temperature`. k-NN uses cosine similarity,
    the similarity the loss trains.
    """

    def __init__(self, temperature: float = 0.1, embedding_dim: int = 128, knn_k: int = 10):
        super().__init__(embedding_dim, knn_k, "cosine")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def pair_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive, _ = pair_masks(labels)
        eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
        logits = z @ z.T / self.temperature
        # An anchor is not its own candidate: a very negative (finite) logit drops it from the softmax.
        logits = logits.masked_fill(eye, -1e4 / self.temperature)
        log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
        n_pos = positive.sum(dim=1)
        mean_log_prob_pos = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
        return -_masked_mean(mean_log_prob_pos, n_pos > 0)
