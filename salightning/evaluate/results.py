"""Result rows and the paper's table layout (Markdown, CSV)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from salightning.paths import remove_outputs, write_error


# (field, header, decimals, higher is better) of the table's metrics, in the paper's order.
METRICS: tuple[tuple[str, str, int, bool], ...] = (
    ("psnr", "PSNR↑", 2, True),
    ("ssim", "SSIM↑", 4, True),
    ("lpips", "LPIPS↓", 4, False),
    ("edge_psnr", "edge PSNR↑", 2, True),
    ("flat_psnr", "flat PSNR↑", 2, True),
)


@dataclass
class ResultRow:
    """One model on one test set: the means of the per-image (per-frame) metrics.

    ``lpips`` is ``None`` when LPIPS was not computed; ``edge_psnr`` / ``flat_psnr`` are ``None``
    without an edge extractor. ``n_images`` counts images, or frames for a video test set.
    """

    model: str
    dataset: str
    scale: int
    psnr: float
    ssim: float
    lpips: float | None
    edge_psnr: float | None
    flat_psnr: float | None
    n_images: int


@dataclass
class EvaluationResults:
    """The rows of an evaluation and the notes that say how they were computed."""

    rows: list[ResultRow]
    notes: list[str] = field(default_factory=list)

    def row(self, model: str, dataset: str) -> ResultRow:
        """The row of ``model`` on ``dataset`` (KeyError if there is none)."""
        for r in self.rows:
            if r.model == model and r.dataset == dataset:
                return r
        raise KeyError(f"no row for model={model!r}, dataset={dataset!r}")

    def __iter__(self) -> Iterator[ResultRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _columns(rows: Sequence[ResultRow]) -> list[tuple[str, str, int, bool]]:
    # PSNR / SSIM / LPIPS always (the paper's layout); the edge metrics when they were computed.
    return [m for m in METRICS if m[0] in ("psnr", "ssim", "lpips") or any(getattr(r, m[0]) is not None for r in rows)]


def _table_layout(rows: Sequence[ResultRow]) -> tuple[list[tuple[str, int]], list[str], dict[tuple[str, int, str], ResultRow]]:
    models: list[tuple[str, int]] = []
    datasets: list[str] = []
    cells: dict[tuple[str, int, str], ResultRow] = {}
    for r in rows:
        if (r.model, r.scale) not in models:
            models.append((r.model, r.scale))
        if r.dataset not in datasets:
            datasets.append(r.dataset)
        cells[(r.model, r.scale, r.dataset)] = r
    return models, datasets, cells


def _fmt(value: float | None, decimals: int) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{decimals}f}"


def _best(rows: Sequence[ResultRow], dataset: str, name: str, higher: bool) -> float | None:
    values = [getattr(r, name) for r in rows if r.dataset == dataset and getattr(r, name) is not None]
    values = [v for v in values if not math.isnan(v)]
    if len(values) < 2:
        return None
    return max(values) if higher else min(values)


def format_table(
    rows: EvaluationResults | Sequence[ResultRow],
    fmt: Literal["markdown", "csv"] = "markdown",
    notes: Sequence[str] | None = None,
) -> str:
    """The paper's table layout: one row per model, one column group per test set.

    Markdown: each test-set column holds ``PSNR / SSIM / LPIPS / edge PSNR / flat PSNR`` (PSNR
    and edge metrics with 2 decimals, SSIM and LPIPS with 4; ``–`` where not computed), the best
    value of each metric per test set in bold, then the notes as a list.

    CSV: columns ``model, scale`` then, per test set ``D``, ``D/psnr, D/ssim, D/lpips,
    D/edge_psnr, D/flat_psnr, D/n_images`` with 6 decimals (empty where not computed); no notes.

    Args:
        rows: an :class:`EvaluationResults` or its rows.
        fmt: ``"markdown"`` or ``"csv"``.
        notes: notes printed under the Markdown table; default the results' notes.
    """
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    if notes is None:
        notes = rows.notes if isinstance(rows, EvaluationResults) else []
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to tabulate")
    models, datasets, cells = _table_layout(rows)
    columns = _columns(rows)
    single_scale = len({s for _, s in models}) == 1
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["model", "scale"] + [f"{d}/{c}" for d in datasets for c in [m[0] for m in columns] + ["n_images"]])
        for model, s in models:
            line: list[str | int] = [model, s]
            for d in datasets:
                r = cells.get((model, s, d))
                for name, *_ in columns:
                    value = None if r is None else getattr(r, name)
                    line.append("" if value is None else f"{value:.6f}")
                line.append("" if r is None else r.n_images)
            writer.writerow(line)
        return buffer.getvalue()
    metric_header = " / ".join(m[1] for m in columns)
    scale_tag = f" ×{models[0][1]}" if single_scale else ""
    lines = [
        "| model | " + " | ".join(f"{d}{scale_tag}: {metric_header}" for d in datasets) + " |",
        "|---|" + "---|" * len(datasets),
    ]
    best = {(d, name): _best(rows, d, name, higher) for d in datasets for name, _, _, higher in columns}
    for model, s in models:
        label = model if single_scale else f"{model} (×{s})"
        parts = []
        for d in datasets:
            r = cells.get((model, s, d))
            if r is None:
                parts.append("–")
                continue
            values = []
            for name, _, decimals, _ in columns:
                text = _fmt(getattr(r, name), decimals)
                value = getattr(r, name)
                if value is not None and best[(d, name)] is not None and _fmt(value, decimals) == _fmt(best[(d, name)], decimals):
                    text = f"**{text}**"
                values.append(text)
            parts.append(" / ".join(values))
        lines.append(f"| {label} | " + " | ".join(parts) + " |")
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_tables(results: EvaluationResults | Sequence[ResultRow], output: str | os.PathLike) -> dict[str, Path]:
    """Write ``results.md`` (with the notes) and ``results.csv`` into the folder ``output``
    (created; existing tables there are replaced). Returns ``{"markdown": path, "csv": path}``.
    A failed write (full or read-only disk) raises an ``OSError`` naming the file, with its errno,
    after removing the tables of this call and the folders it created."""
    folder = Path(output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {str(folder)!r} is a file; give a folder")
    paths = {"markdown": folder / "results.md", "csv": folder / "results.csv"}
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for kind, path in paths.items():
            written.append(path)
            path.write_text(format_table(results, kind), encoding="utf-8")
    except OSError as err:
        remove_outputs(written, created)
        raise write_error(err, written[-1] if written else folder) from err
    return paths
