"""Evaluation beyond the clean test split: common corruptions at five severities (Hendrycks & Dietterich 2019)
and out-of-distribution detection (Hendrycks & Gimpel 2017; energy scores, Liu et al. 2020).

  corruptions.py   the corruptions, batched on the device, with their severity parameters
  filters.py       the filters they share, with the reference implementations' borders
  jpeg.py          jpeg_compression (libjpeg's baseline JPEG)
  spatter.py       spatter (imagecorruptions' water drops and mud, OpenCV's chain batched)
  ood.py           OOD inputs (other datasets of the registry, generated images) and the AUROC / FPR95 metrics
  evaluate.py      the `evaluate:` suite block scored on a trained model, in `run` and in `lossbench evaluate`
"""
