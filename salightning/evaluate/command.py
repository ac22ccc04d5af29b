"""``salightning evaluate``: the command line of the evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from salightning.data.io import list_images
from salightning.data.samples import sample_image_paths
from salightning.edges import EdgeExtractor
from salightning.paths import check_not_existing, check_output_not_inside
from salightning.checkpoints import TRUST_HELP

from salightning.evaluate.figures import comparison_figure
from salightning.evaluate.models import load_models, resolve_device
from salightning.evaluate.results import format_table, write_tables
from salightning.evaluate.run import evaluate_checkpoints
from salightning.evaluate.testsets import BUILTIN_TEST_SETS, TestSetSpec, resolve_test_set

def _split_labelled(values: Sequence[str], option: str) -> list[tuple[str | None, str]]:
    out = []
    for value in values:
        label, sep, path = value.partition("=")
        if sep and (not label or not path):
            raise ValueError(f"{option}: expected label=path or a path, got {value!r}")
        out.append((label, path) if sep else (None, value))
    return out


def _parse_compare(values: Sequence[str]) -> list[tuple[str, tuple[int, int, int]]]:
    out = []
    for value in values:
        name, sep, box = value.rpartition(":")
        try:
            top, left, size = (int(v) for v in box.split(","))
        except ValueError:
            raise ValueError(f"--compare: expected NAME:TOP,LEFT,SIZE (HR pixels), got {value!r}") from None
        if not sep or not name:
            raise ValueError(f"--compare: expected NAME:TOP,LEFT,SIZE (HR pixels), got {value!r}")
        out.append((name, (top, left, size)))
    return out


def _find_compare_image(name: str, test_sets: Mapping[str, TestSetSpec]) -> Path:
    """The HR image of the image test sets whose stem (or ``set/stem``) is ``name``."""
    wanted_set, _, stem = name.rpartition("/")
    for label, spec in test_sets.items():
        if wanted_set and label != wanted_set:
            continue
        test_set = resolve_test_set(label, spec)
        if test_set.kind != "image":
            continue
        if test_set.hr is None:
            files = sample_image_paths("test")
        else:
            root = Path(test_set.hr)
            files = list_images(root / "GTmod12" if (root / "GTmod12").is_dir() else root, option=f"test_sets[{label!r}]")
        for f in files:
            if f.stem == stem:
                return f
    raise FileNotFoundError(f"--compare: no image named {name!r} in the image test sets {list(test_sets)}")


def main(argv: list[str]) -> None:
    """``salightning evaluate``: print the paper's table and write results.md / results.csv."""
    from salightning.options import CommandParser

    parser = CommandParser(
        prog="salightning evaluate",
        description="Evaluate checkpoints on test sets like the paper (PSNR / SSIM / LPIPS, edge / flat PSNR); "
        "prints the table and writes results.md and results.csv.",
    )
    parser.add_argument("--ckpt_path", type=str, nargs="+", required=True, help="checkpoint(s) of `salightning fit`, as path or label=path")
    parser.add_argument(
        "--test_sets",
        type=str,
        nargs="+",
        default=None,
        help="test sets as label=path or path (label: folder name): folders of HR images, Set5/Set14 roots, folders of "
        f"clips or video files; or the built-in {' / '.join(BUILTIN_TEST_SETS)} (default: samples, plus sample_clips "
        "for video checkpoints)",
    )
    parser.add_argument("--output", type=str, default="evaluation", help="folder for results.md, results.csv (and comparison.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace results.md / results.csv / comparison.png in --output; without it existing ones stop the run before any work")
    parser.add_argument("--lpips", type=Literal["alex", "vgg", "none"], default="alex", help="LPIPS trunk, or none")
    parser.add_argument("--backbone_weights", type=str | None, default=None, help="torchvision ImageNet weights of the LPIPS trunk (default: torchvision's cache)")
    parser.add_argument("--rgb", action="store_true", help="PSNR/SSIM on RGB instead of the MATLAB BT.601 Y channel")
    parser.add_argument("--crop_border", type=int | None, default=None, help="border pixels ignored by PSNR/SSIM (default: the scale)")
    parser.add_argument("--no_bicubic", action="store_true", help="leave out the bicubic baseline row")
    parser.add_argument("--no_ema", action="store_true", help="use the raw generators even if the checkpoints have EMA ones")
    parser.add_argument("--tile", type=int, default=0, help="tile size in LR pixels, 0 = whole images (exact)")
    parser.add_argument("--tile_overlap", type=int, default=32, help="overlap between tiles in LR pixels")
    parser.add_argument("--device", type=str, default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda if available)")
    parser.add_argument("--trust_module", type=str, nargs="+", default=[], help=TRUST_HELP)
    parser.add_argument(
        "--compare",
        type=str,
        nargs="+",
        default=None,
        help="comparison figure crops as NAME:TOP,LEFT,SIZE (image stem, or set/stem, of an image test set; HR pixels)",
    )
    parser.add_subclass_arguments(
        EdgeExtractor, "edge_extractor", required=False, default={"class_path": "salightning.edges.LocalVariance"}
    )
    args = parser.parse_args(argv)
    edge_extractor = parser.instantiate_classes(args).edge_extractor

    checkpoints: dict[str, str] = {}
    for label, path in _split_labelled(args.ckpt_path, "--ckpt_path"):
        label = label or Path(path).stem
        if label in checkpoints:
            raise ValueError(f"--ckpt_path: the label {label!r} is used twice; write label=path to name each checkpoint")
        checkpoints[label] = path
    test_sets: dict[str, TestSetSpec] | None = None
    if args.test_sets:
        test_sets = {}
        for label, path in _split_labelled(args.test_sets, "--test_sets"):
            if label is None and path in BUILTIN_TEST_SETS and not Path(path).exists():
                test_sets[path] = None
                continue
            label = label or Path(path).expanduser().resolve().name
            if label in test_sets:
                raise ValueError(f"--test_sets: the label {label!r} is used twice; write label=path")
            test_sets[label] = path
    inputs = [*checkpoints.values(), *(p for p in (test_sets or {}).values() if p is not None)]
    check_output_not_inside(inputs, args.output, "--output")
    if not args.overwrite:  # checked before any work: an evaluation can take hours
        outputs = [Path(args.output) / name for name in ("results.md", "results.csv", *(["comparison.png"] if args.compare else []))]
        check_not_existing(outputs, f"--output {args.output!r}", "choose another --output")
    lpips = None if args.lpips == "none" else args.lpips
    common = {"tile": args.tile, "tile_overlap": args.tile_overlap, "device": args.device}
    # Loaded once, for the table and the figure.
    generators = dict(load_models(checkpoints, resolve_device(args.device), not args.no_ema, args.trust_module))
    results = evaluate_checkpoints(
        generators,
        test_sets,
        y_channel=not args.rgb,
        crop_border=args.crop_border,
        lpips=lpips,
        backbone_weights=args.backbone_weights,
        edge_extractor=edge_extractor,
        include_bicubic=not args.no_bicubic,
        **common,
    )
    print(format_table(results, "markdown"))
    paths = write_tables(results, args.output)
    print(f"wrote {paths['markdown'].resolve()} and {paths['csv'].resolve()}")
    if args.compare:
        crops = _parse_compare(args.compare)
        sets = test_sets if test_sets is not None else {"samples": None}
        figure = comparison_figure(
            [(name, _find_compare_image(name, sets)) for name, _ in crops],
            [box for _, box in crops],
            generators,
            Path(args.output) / "comparison.png",
            include_bicubic=not args.no_bicubic,
            y_channel=not args.rgb,
            lpips=lpips,
            backbone_weights=args.backbone_weights,
            **common,
        )
        print(f"wrote {figure.resolve()}")
