"""Evaluation of a model during and after training: one evaluator per head.

- `LogitsEvaluator`: the model outputs one score per class; the prediction is the argmax.
- `EmbeddingEvaluator`: the model outputs an embedding; class scores are k-NN votes against the training-set
  embeddings, and the prediction is their argmax.

An evaluator owns the per-epoch metrics (test loss, top-1, top-5, validation accuracy), the final metrics
(NLL, ECE, Brier score, per-class accuracy, confusion matrix, reliability bins, train accuracy and gap) and the
notes that explain how they were computed. Every metric of one evaluation uses one tie rule: the predicted class
is the *lowest-index* class among those with the highest score (`metrics.predicted_class`), and top-k takes the
k highest with the same order, so top-1, the confusion matrix, per-class accuracy and ECE always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.device import Normalizer, autocast
from lossbench.embedding_eval import evaluate_retrieval, knn_class_scores, knn_probabilities
from lossbench.metrics import (
    brier_score,
    confusion_matrix,
    expected_calibration_error,
    per_class_accuracy,
    predicted_class,
    reliability_bins,
    topk_correct,
)

if TYPE_CHECKING:
    from lossbench.data.base import ImageData
    from lossbench.device import EngineOptions
    from lossbench.losses.base import Loss

#: Equal-width confidence bins of ECE and the reliability diagram.
CALIBRATION_BINS = 15


@dataclass
class EpochEvaluation:
    """What one epoch's evaluation measured. Losses in nats per sample; accuracies in [0, 1]."""

    test_loss: float | None
    test_acc: float | None
    test_top5: float | None
    val_loss: float | None = None
    val_acc: float | None = None
    val_top5: float | None = None
    val_nll: float | None = None
    val_ece: float | None = None


class Evaluator:
    """Shared work of both heads: model outputs of a whole split, in eval mode and large no-grad batches; the
    metrics that only need class scores. A head turns outputs into (loss, class scores) and adds its own metrics."""

    #: Whether the training loop's running accuracy (argmax of the batch outputs) means anything for this head.
    measures_train_acc: bool = True

    def __init__(self, loss: Loss, data: ImageData, normalizer: Normalizer, options: EngineOptions, *,
                 batch_size: int, eval_batch_size: int, evaluate_test: bool = True):
        self.loss, self.data, self.normalizer, self.options = loss, data, normalizer, options
        #: The training batch size (images per step): the batches of an embedding loss measured on a split.
        self.batch_size = batch_size
        #: Images per forward pass of an evaluation.
        self.eval_batch_size = eval_batch_size
        #: Measure the test split (each epoch and at the end). A tuning trial is judged on the validation split
        #: only, and the test split is never read while tuning.
        self.evaluate_test = evaluate_test
        # The last epoch's test outputs, loss and class scores: the final metrics reuse them (the model has not
        # changed since), so the last epoch's test accuracy and the final one are the same number.
        self._test: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def outputs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Model outputs for a whole split as float32 [N, out_features]."""
        model.eval()
        outs = []
        with torch.no_grad(), autocast(self.options.device, self.options.precision):
            for start in range(0, x.shape[0], self.eval_batch_size):
                chunk = x[start : start + self.eval_batch_size]
                outs.append(model(self.normalizer.standardize(self.normalizer.to_unit(chunk))).float())
        model.train()
        return torch.cat(outs) if outs else torch.zeros(0, 0, device=x.device)

    def notes(self, loss_name: str) -> list[str]:
        """Sentences for the result file that explain how this head's metrics are computed."""
        return []

    def epoch(self, model: nn.Module) -> EpochEvaluation:
        """Test loss, top-1 and top-5 (None each without `evaluate_test`), and with a validation split its loss,
        top-1, top-5, NLL and ECE."""
        if self.evaluate_test:
            labels = self.data.test_y
            _, test_loss, scores = self._evaluate_test(model)
            n = labels.shape[0]
            result = EpochEvaluation(test_loss.item(), topk_correct(scores, labels, 1).item() / n,
                                     topk_correct(scores, labels, 5).item() / n)
        else:
            self._prepare(model)
            result = EpochEvaluation(None, None, None)
        if self.data.val_x is not None and self.data.val_x.shape[0] > 0:
            labels = self.data.val_y
            val_loss, val_scores = self._scored(self.outputs(model, self.data.val_x), labels)
            n = labels.shape[0]
            log_probs = self._log_probabilities(val_scores)
            result.val_loss = val_loss.item()
            result.val_acc = topk_correct(val_scores, labels, 1).item() / n
            result.val_top5 = topk_correct(val_scores, labels, 5).item() / n
            result.val_nll = F.nll_loss(log_probs, labels).item()
            result.val_ece = expected_calibration_error(log_probs.exp(), labels, predicted_class(val_scores),
                                                        bins=CALIBRATION_BINS).item()
        return result

    def _log_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """The head's log class probabilities [N, C] from its class scores (what NLL and ECE are computed on, as
        in `final`)."""
        raise NotImplementedError

    def final(self, model: nn.Module) -> dict[str, Any]:
        """The final metrics of the trained model; every one of them predicts with `predicted_class`."""
        out, test_loss, scores = self._test if self._test is not None else self._evaluate_test(model)
        labels = self.data.test_y
        n = labels.shape[0]
        log_probs, train_scores, extra = self._final_extras(model, out, scores)
        probs = log_probs.exp()
        predicted = predicted_class(scores)
        confusion = confusion_matrix(predicted, labels, self.data.num_classes)
        test_acc = (predicted == labels).sum().item() / n
        train_acc = topk_correct(train_scores, self.data.train_y, 1).item() / self.data.train_y.shape[0]
        return {
            "test_acc": test_acc,
            "test_top5": topk_correct(scores, labels, 5).item() / n,
            "test_loss": test_loss.item(),
            "test_nll": F.nll_loss(log_probs, labels).item(),
            "ece": expected_calibration_error(probs, labels, predicted, bins=CALIBRATION_BINS).item(),
            "brier": brier_score(probs, labels).item(),
            "train_acc": train_acc,
            "gap": train_acc - test_acc,
            "per_class_acc": [None if math.isnan(v) else v for v in per_class_accuracy(confusion).tolist()],
            "confusion": confusion.tolist(),
            "reliability": reliability_bins(probs, labels, predicted, bins=CALIBRATION_BINS),
            **extra,
        }

    def _evaluate_test(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.outputs(model, self.data.test_x)
        self._prepare(model)
        self._test = (out, *self._scored(out, self.data.test_y))
        return self._test

    def _prepare(self, model: nn.Module) -> None:
        """Anything the head needs besides a split's outputs before scoring it (the k-NN reference set)."""

    def _scored(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss as a device scalar, class scores [N, C]) of a split's outputs."""
        raise NotImplementedError

    def _final_extras(
        self, model: nn.Module, out: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(log class probabilities of the test split, class scores of the clean training split, head metrics)."""
        raise NotImplementedError


class LogitsEvaluator(Evaluator):
    """One score per class; predictions by argmax; NLL and ECE of their softmax. The scores are the outputs, or for
    a loss holding its own class layer (arcface, cosface, center) `loss.to_logits(outputs)`."""

    def notes(self, loss_name: str) -> list[str]:
        if self.loss.probabilistic:
            return []
        return [f"loss '{loss_name}' does not train softmax(outputs) as probabilities; test NLL and ECE are "
                "computed on softmax(outputs) all the same"]

    def _log_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.log_softmax(dim=1)

    def _scored(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.eval_batch_size
        total = torch.zeros((), device=outputs.device)
        for start in range(0, outputs.shape[0], batch):
            o, y = outputs[start : start + batch], labels[start : start + batch]
            total += self.loss(o, y).detach() * o.shape[0]
        # The loss's class scores: the outputs themselves, or the loss's own class layer applied to them.
        return total / max(outputs.shape[0], 1), self.loss.to_logits(outputs)

    def _final_extras(
        self, model: nn.Module, out: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        return scores.log_softmax(dim=1), self.loss.to_logits(self.outputs(model, self.data.train_x)), {}


class EmbeddingEvaluator(Evaluator):
    """An embedding per image; class scores are k-NN votes against the clean training-set embeddings."""

    measures_train_acc = False

    def __init__(self, loss: Loss, data: ImageData, normalizer: Normalizer, options: EngineOptions, *,
                 batch_size: int, eval_batch_size: int, evaluate_test: bool = True):
        super().__init__(loss, data, normalizer, options, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         evaluate_test=evaluate_test)
        self._train_emb: torch.Tensor | None = None

    def notes(self, loss_name: str) -> list[str]:
        return [
            f"loss '{loss_name}' has an embedding head: test_acc, test_top5, per-class accuracy and the "
            f"confusion matrix come from k-NN (k={self.loss.knn_k}, {self.loss.knn_metric}) against the "
            "training-set embeddings; test_nll, ece and brier are computed on the k-NN class probabilities "
            "(rank-weighted neighbour votes v with add-one smoothing, p_c = (v_c + 1) / (sum v + C)); train_acc "
            "is leave-one-out k-NN on the clean training set; test_loss is the training loss on test embeddings in "
            "batches of the training batch size; per-epoch train_acc is not measured"
        ]

    def _knn(self) -> dict[str, Any]:
        return {"k": self.loss.knn_k, "metric": self.loss.knn_metric, "batch_size": self.eval_batch_size}

    def _prepare(self, model: nn.Module) -> None:
        # The clean training images' embeddings, eval mode: the reference set of k-NN evaluation.
        self._train_emb = self.loss.embed(self.outputs(model, self.data.train_x))

    def _embedding_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean loss of embedding outputs in batches of the training batch size.

        Pair losses depend on which samples share a batch; a fixed shuffled order (seed 0) gives every batch
        several classes even where a split is stored sorted by class, and the same batches in every epoch and cell.
        """
        n, batch = outputs.shape[0], self.batch_size
        order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(outputs.device)
        total = torch.zeros((), device=outputs.device)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            total += self.loss(outputs[idx], labels[idx]).detach() * idx.shape[0]
        return total / max(n, 1)

    def _log_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return knn_probabilities(scores).log()

    def _scored(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._train_emb is not None
        scores = knn_class_scores(self.loss.embed(outputs), self._train_emb, self.data.train_y,
                                  self.data.num_classes, **self._knn())
        return self._embedding_loss(outputs, labels), scores

    def _final_extras(
        self, model: nn.Module, out: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        assert self._train_emb is not None
        train_emb, train_y, classes = self._train_emb, self.data.train_y, self.data.num_classes
        retrieval = evaluate_retrieval(self.loss.embed(out), self.data.test_y, train_emb, train_y, classes,
                                       **self._knn())
        train_scores = knn_class_scores(train_emb, train_emb, train_y, classes, exclude_self=True, **self._knn())
        extra = {
            "precision_at_1": retrieval.precision_at_1.item(),
            "map_at_r": retrieval.map_at_r.item(),
            "knn_k": self.loss.knn_k,
            "knn_metric": self.loss.knn_metric,
        }
        return knn_probabilities(scores).log(), train_scores, extra


def evaluator_for(loss: Loss, data: ImageData, normalizer: Normalizer, options: EngineOptions, *, batch_size: int,
                  eval_batch_size: int, evaluate_test: bool = True) -> Evaluator:
    """The evaluator of the loss's head; `batch_size` is the training batch size, `eval_batch_size` the images per
    evaluation forward pass, `evaluate_test` False for a tuning trial (validation split only)."""
    head = EmbeddingEvaluator if loss.head == "embedding" else LogitsEvaluator
    return head(loss, data, normalizer, options, batch_size=batch_size, eval_batch_size=eval_batch_size,
                evaluate_test=evaluate_test)
