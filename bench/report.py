"""docs/performance.md, written from one bench/run.py results file (nothing in it is edited by hand).

    python bench/report.py [--results bench/results.json] [--doc docs/performance.md]

bench/run.py calls :func:`performance_page` at the end of every --quick and full run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: figure-name prefix -> the section it is listed under, in page order
SECTIONS = (
    ("The GAN step", ("gan_step", "two_d", "fused", "lightning_vs_bare", "sa_local", "sa_canny", "stage2_step", "bf16", "channels_last", "compile")),
    ("Compute", ("generator_", "dense_conv")),
    ("Edge maps", ("local_variance", "canny", "sobel")),
    ("Data", ("data", "imresize")),
    ("Prediction", ("tiled", "tile_grid", "untiled", "video", "image_predict")),
    ("Training memory", ("sa_esrgan_stage2", "sa_vsrresfeatgan_stage2")),
    ("Real-world degradations", ("degradation",)),
)

HOW_TO_READ = """\
Every figure is measured in the one run named above; none is edited by hand. A ratio compares two
things measured in that run, their variants interleaved round by round so that other jobs' load
hits both sides alike. On a CPU a step-time ratio is the ratio of the **minimum CPU seconds per
batch** (one torch thread: CPU time is the work done, and other jobs on the same cores only ever
add to it, through evicted caches); `results.json` also holds the ratios of median CPU
(`<name>_median_cpu`) and median wall times (`<name>_wall`). A target counts as **met** only when
the figure and every round's own ratio are within it; when the rounds straddle the target it is
**within noise**, not met. CPU results do not predict GPU ones: bench/gpu_check.sh measures those
on a GPU."""


def judged(name: str, value: float, spread: tuple[float, float] | None, targets: dict[str, tuple[float, str]]) -> str:
    if name not in targets:
        return ""
    target, sense = targets[name]
    inside = value <= target if sense == "<=" else value >= target
    if spread is None:
        return f"{sense} {target:g}: {'met' if inside else 'MISSED'}"
    low, high = spread if sense == "<=" else (-spread[1], -spread[0])
    bound = target if sense == "<=" else -target
    if inside and high <= bound:
        return f"{sense} {target:g}: met"
    return f"{sense} {target:g}: {'within noise' if low <= bound else 'MISSED'}"


def section_of(name: str) -> str:
    for title, prefixes in SECTIONS:
        if name.startswith(prefixes):
            return title
    return "Other"


def performance_page(results: dict, targets: dict[str, tuple[float, str]]) -> str:
    """The Markdown page for ``results`` (bench/run.py's JSON: meta, figures, details, round_spreads)."""
    meta, figures, details = results["meta"], results["figures"], results.get("details", {})
    spreads = {k: tuple(v) for k, v in results.get("round_spreads", {}).items()}
    load = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
    lines = [
        "# Performance",
        "",
        "<!-- written by bench/run.py (bench/report.py) from bench/results.json: do not edit -->",
        "",
        "```bash",
        "python bench/run.py            # every benchmark; writes bench/results.json and this page",
        "python bench/run.py --quick    # smaller sizes and fewer rounds; also writes both",
        "python bench/run.py --smoke    # CI: every benchmark at its smallest, checks each figure is finite",
        "```",
        "",
        "| run | |",
        "| --- | --- |",
        f"| kind | {meta['kind']} |",
        f"| commit | {meta['commit']} |",
        f"| date | {meta['date']} |",
        f"| device | {meta['device']} |",
        f"| torch | {meta['torch']}, {meta['torch_threads']} thread(s) |",
        f"| run time | {meta['run_seconds']:.0f} s |",
        f"| load average (1/5/15 min) | {load(meta['load_average_start'])} at the start, {load(meta['load_average_end'])} at the end |",
        "",
        HOW_TO_READ,
        "",
    ]
    if meta["kind"] != "full":
        lines += [f"**This is a {meta['kind']} run**: small sizes and few rounds; its ratios are not the full run's.", ""]
    met = [(n, judged(n, figures[n], spreads.get(n), targets)) for n in targets if n in figures]
    if met:
        lines += ["## Targets", "", "| figure | value | target | per-round spread |", "| --- | --- | --- | --- |"]
        for name, verdict in met:
            spread = spreads.get(name)
            shown = f"{spread[0]:.3f}-{spread[1]:.3f}" if spread else "-"
            lines.append(f"| `{name}` | {figures[name]:.4g} | {verdict} | {shown} |")
        lines.append("")
    grouped: dict[str, list[str]] = {}
    for name in figures:
        if name.endswith(("_median_cpu", "_wall")):
            continue
        grouped.setdefault(section_of(name), []).append(name)
    for title in [t for t, _ in SECTIONS] + ["Other"]:
        if title not in grouped:
            continue
        lines += [f"## {title}", "", "| figure | value | how it was measured |", "| --- | --- | --- |"]
        for name in grouped[title]:
            extra = []
            for suffix, what in (("_median_cpu", "median CPU"), ("_wall", "median wall")):
                if name + suffix in figures:
                    extra.append(f"{what} ratio {figures[name + suffix]:.3f}")
            how = "; ".join([details.get(name, "")] + extra).replace("|", "/")
            lines.append(f"| `{name}` | {figures[name]:.4g} | {how} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "performance.md")
    args = parser.parse_args()
    import run  # the targets live beside the figures they judge

    args.doc.write_text(performance_page(json.loads(args.results.read_text()), run.TARGETS))


if __name__ == "__main__":
    main()
