"""The curves of a run as one PNG: losses, SA share and beta2, learning rates, validation metrics.

Read from the run's ``metrics.csv`` (:class:`salightning.loggers.CSVLogger`; an older run's
``logs/version_N/metrics.csv`` files are read in order, as one). Written at the end of every
``salightning fit`` by :class:`salightning.callbacks.TrainingCurves`, and by
``salightning plot RUN_DIR`` at any time, also while the run trains. Needs matplotlib
(``pip install salightning[plot]``).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CURVES_FILE", "PANELS", "metrics_files", "read_metrics", "plot_run", "plot_metrics", "main", "add_arguments"]

#: The PNG's name in the run folder.
CURVES_FILE = "curves.png"

#: (title, y label, columns of the left axis, columns of the right axis, log scale of the left axis).
PANELS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], bool], ...] = (
    ("generator losses", "loss", ("train/loss", "train/pixel", "train/pixel_plain", "train/pixel_sa", "train/perceptual", "train/adversarial", "train/tv", "val/loss"), (), True),
    ("discriminator", "loss", ("train/d_real", "train/d_fake"), ("train/d_real_logit", "train/d_fake_logit"), False),
    ("SA share of the generator loss (left) and beta2 (right)", "share", ("train/sa_share",), ("train/sa_beta",), False),
    ("learning rates", "lr", ("train/lr_g", "train/lr_d"), (), True),
    ("validation PSNR", "dB", ("val/psnr", "val/edge_psnr", "val/flat_psnr"), (), False),
    ("validation similarity (LPIPS: lower is better)", "", ("val/ssim", "val/ms_ssim", "val/vif"), ("val/lpips",), False),
)

_VERSION = re.compile(r"version_(\d+)$")


def metrics_files(run_dir: str | Path) -> list[Path]:
    """The ``metrics.csv`` files of a run folder in the order they were written: ``logs/metrics.csv``,
    else the ``logs/version_N/metrics.csv`` of older runs by N, else any ``metrics.csv`` directly inside.

    Raises:
        FileNotFoundError: naming the folder when it is missing or holds no metrics.csv.
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"RUN_DIR {str(run)!r} is not a folder; give a run folder such as runs/quickstart/version_0")
    if (run / "logs" / "metrics.csv").is_file():
        return [run / "logs" / "metrics.csv"]
    versions = sorted((p for p in (run / "logs").glob("version_*/metrics.csv") if _VERSION.search(p.parent.name)),
                      key=lambda p: int(_VERSION.search(p.parent.name).group(1)))
    if versions:
        return versions
    if (run / "metrics.csv").is_file():
        return [run / "metrics.csv"]
    raise FileNotFoundError(
        f"{str(run)!r} holds no metrics.csv (looked for logs/metrics.csv, logs/version_N/metrics.csv and metrics.csv); "
        "give the folder of one run, e.g. runs/quickstart/version_0"
    )


def read_metrics(files: Sequence[Path]) -> dict[str, tuple[list[float], list[float]]]:
    """Column -> (steps, values) over the files in order; empty and non-numeric cells are skipped.

    A later file's rows replace an earlier file's rows from its first step on (a resumed run
    relogs the steps after its checkpoint)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for path in files:
        with open(path, newline="") as file:
            rows = [row for row in csv.DictReader(file) if (row.get("step") or "").strip()]
        if not rows:
            continue
        first = min(float(row["step"]) for row in rows)
        for steps, values in series.values():
            keep = [i for i, s in enumerate(steps) if s < first]
            steps[:], values[:] = [steps[i] for i in keep], [values[i] for i in keep]
        for row in rows:
            step = float(row["step"])
            for name, cell in row.items():
                if name in ("step", "epoch") or not cell:
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if math.isfinite(value):
                    steps, values = series.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(value)
    return series


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw the curves of the run in ``run_dir`` (see :data:`PANELS`) into one PNG.

    Args:
        run_dir: a run folder (``<trainer.default_root_dir>/version_N``).
        output: the PNG (default ``<run_dir>/curves.png``), replaced if it exists.

    Returns:
        The path of the PNG.

    Raises:
        FileNotFoundError: no run folder or no metrics.csv in it.
        ValueError: a metrics.csv with no numeric column to draw.
        ModuleNotFoundError: matplotlib is not installed.
    """
    run = Path(run_dir).expanduser()
    return plot_metrics(metrics_files(run), Path(output).expanduser() if output is not None else run / CURVES_FILE, str(run.resolve()))


def plot_metrics(files: Sequence[Path], output: Path, title: str = "") -> Path:
    """:func:`plot_run` for given ``metrics.csv`` files (read by :func:`read_metrics`) into ``output``."""
    series = read_metrics(files)
    panels = [(heading, label, [c for c in left if c in series], [c for c in right if c in series], log)
              for heading, label, left, right, log in PANELS]
    panels = [p for p in panels if p[2] or p[3]]
    if not panels:
        raise ValueError(f"{', '.join(map(str, files))}: no training or validation metrics to draw yet")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.4 * rows), squeeze=False)
    for ax, (heading, label, left, right, log) in zip(axes.flat, panels):
        for name in left:
            steps, values = series[name]
            ax.plot(steps, values, label=name, marker="o" if len(steps) < 30 else None, markersize=3, linewidth=1)
        if log and any(v > 0 for name in left for v in series[name][1]):
            ax.set_yscale("log", nonpositive="mask")  # terms that start at 0 (beta2 before calibration) are left out
        twin = ax.twinx() if right else None
        for i, name in enumerate(right):
            steps, values = series[name]
            twin.plot(steps, values, label=name, color=f"C{len(left) + i}", linestyle="--", linewidth=1,
                      marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(heading, fontsize=10)
        ax.set_xlabel("training batch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


def add_arguments(parser: Any) -> None:
    """The options of ``salightning plot``."""
    parser.add_argument("run_dir", type=str, help="a run folder (runs/<experiment>/version_N) with logs/metrics.csv")
    parser.add_argument("--output", type=str, default=None, help=f"the PNG (default RUN_DIR/{CURVES_FILE})")


def main(args: Any) -> Path:
    """``salightning plot RUN_DIR``: write the curves PNG and print its path."""
    try:
        path = plot_run(args.run_dir, args.output)
    except ModuleNotFoundError as err:
        raise ValueError(f"salightning plot needs matplotlib ({err}): pip install matplotlib") from None
    print(f"wrote {path.resolve()}")
    return path
