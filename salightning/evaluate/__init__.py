"""Evaluation like the paper: result tables (Tables I–IV) and side-by-side crops (Figs. 8–10).

* :func:`evaluate_checkpoints`: one or several checkpoints of ``salightning fit`` on one or
  several test sets -> :class:`EvaluationResults` (rows of PSNR / SSIM / LPIPS / edge PSNR /
  flat PSNR per model and test set, plus notes saying how the numbers were made);
* :func:`format_table` / :func:`write_tables`: the paper's layout (rows = models, one column
  group per test set) as Markdown and CSV;
* :func:`comparison_figure`: GT | LR | bicubic | model A | model B ... crops with the crop's
  metrics under each, as a PNG (also logged to W&B when a run is active);
* ``salightning evaluate`` (:func:`main`): the same from the command line.

How the numbers are made (what the notes of every table repeat):

* **LR from HR**, as the benchmarks' LR images were made: the HR image is cropped to a multiple
  of the scale, shrunk with MATLAB-compatible bicubic (:func:`salightning.ops.imresize`, ×1/s)
  and rounded to 8 bits (:func:`salightning.data.benchmark_lr`). A Set5/Set14-style root with
  ``GTmod12`` and ``LRbicx{s}`` folders, or an explicit ``(hr_folder, lr_folder)`` pair, uses
  the stored LR images instead (paired by name through :func:`salightning.data.benchmark_dataset`).
* **Metrics** from :mod:`salightning.metrics`: 8-bit rounded images, ``crop_border`` pixels
  (default: the scale) removed on each side, MATLAB BT.601 Y channel by default, SSIM with the
  11×11 Gaussian window (σ 1.5); LPIPS on the whole RGB images; edge / flat PSNR weighted by the
  edge map ``W(hr)`` / ``1 − W(hr)`` of the ground truth (default :class:`~salightning.edges.LocalVariance`).
  A dataset's score is the mean of the per-image values.
* **Video test sets** (folders of clips, frame folders or video files): every frame of every
  clip is super-resolved (:func:`salightning.predict.super_resolve_clip`: video generators see
  the window t−k..t+k, mirrored at the clip's ends) and the metrics are averaged over all frames
  of all clips, each frame counting once (so longer clips weigh more).
"""

from salightning.evaluate.command import main
from salightning.evaluate.figures import CAPTION_HEIGHT, FIGURE_PADDING, comparison_figure
from salightning.evaluate.models import BICUBIC
from salightning.evaluate.results import EvaluationResults, ResultRow, format_table, write_tables
from salightning.evaluate.run import evaluate_checkpoints
from salightning.evaluate.testsets import BUILTIN_TEST_SETS, default_test_sets

__all__ = [
    "BICUBIC",
    "BUILTIN_TEST_SETS",
    "CAPTION_HEIGHT",
    "FIGURE_PADDING",
    "EvaluationResults",
    "ResultRow",
    "comparison_figure",
    "default_test_sets",
    "evaluate_checkpoints",
    "format_table",
    "main",
    "write_tables",
]
