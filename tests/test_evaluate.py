"""Evaluation like the paper: tables from checkpoints, Markdown/CSV, LPIPS notes, comparison figure, video sets."""

from __future__ import annotations

import csv
import io
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from salightning import metrics
from salightning.data import read_image, sample_image_paths
from salightning.ops import imresize
from salightning.data.io import FrameFolder
from salightning.edges import LocalVariance
from salightning.evaluate import (
    BICUBIC,
    CAPTION_HEIGHT,
    FIGURE_PADDING,
    EvaluationResults,
    default_test_sets,
    main as evaluate_main,
    comparison_figure,
    evaluate_checkpoints,
    format_table,
    write_tables,
)
from salightning.predict import super_resolve_clip
from salightning.checkpoints import load_generator

SCALE = 4
RRDB_ARGS = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": SCALE}
VSR_ARGS = {"num_frames": 3, "frame_features": 4, "num_features": 8, "num_blocks": 1, "scale": SCALE}


def _save_checkpoint(path: Path, class_path: str, init_args: dict, seed: int) -> Path:
    """A checkpoint shaped like the ones `salightning fit` writes (generator config + state_dict)."""
    from salightning import models

    torch.manual_seed(seed)
    generator = getattr(models, class_path.rsplit(".", 1)[1])(**init_args)
    ckpt = {
        "hyper_parameters": {"generator": {"class_path": class_path, "init_args": dict(init_args)}},
        "state_dict": {f"generator.{k}": v for k, v in generator.state_dict().items()},
    }
    torch.save(ckpt, path)
    return path


def _save_png(image: torch.Tensor, path: Path) -> None:
    Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory, photos):
    """Two tiny RRDBNet checkpoints, one tiny VSRResNet checkpoint, a folder of real photo crops
    (sizes not multiples of 4) and a folder of two clips (a real photo with a small shift per frame)."""
    root = tmp_path_factory.mktemp("evaluate")
    ckpt_a = _save_checkpoint(root / "model_a.ckpt", "salightning.models.RRDBNet", RRDB_ARGS, seed=0)
    ckpt_b = _save_checkpoint(root / "model_b.ckpt", "salightning.models.RRDBNet", RRDB_ARGS, seed=1)
    ckpt_v = _save_checkpoint(root / "video.ckpt", "salightning.models.VSRResNet", VSR_ARGS, seed=2)
    crops = root / "crops"
    crops.mkdir()
    _save_png(photos[1][:, 100:170, 150:248], crops / "chelsea_crop.png")  # 70x98 -> 68x96
    _save_png(photos[0][:, 20:85, 180:246], crops / "astronaut_crop.png")  # 65x66 -> 64x64
    clips = root / "clips"
    for c, (top, left) in enumerate([(100, 200), (200, 300)]):
        folder = clips / f"clip{c}"
        folder.mkdir(parents=True)
        for t in range(4):
            _save_png(photos[2][:, top + t : top + t + 48, left + 2 * t : left + 2 * t + 64], folder / f"{t:03d}.png")
    return {"a": ckpt_a, "b": ckpt_b, "video": ckpt_v, "crops": crops, "clips": clips, "root": root}


@pytest.fixture()
def no_torch_cache(tmp_path, monkeypatch):
    """An empty torchvision cache, so LPIPS finds no backbone weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _direct(generator, hr_path: Path):
    """(sr, hr) computed here from the published protocol: mod-crop, MATLAB bicubic x1/4, 8-bit LR."""
    hr = read_image(hr_path)
    h, w = hr.shape[-2] // SCALE * SCALE, hr.shape[-1] // SCALE * SCALE
    hr = hr[:, :h, :w].unsqueeze(0)
    lr = (imresize(hr, 1 / SCALE).clamp(0, 1) * 255).round() / 255
    with torch.no_grad():
        sr = generator(lr).clamp(0, 1)
    bicubic = imresize(lr, float(SCALE)).clamp(0, 1)
    return sr, bicubic, hr


@pytest.fixture(scope="module")
def results(files):
    """2 checkpoints x 2 test sets (photo crops written here, built-in sample test photos), no LPIPS weights."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(files["root"] / "empty_torch_home"))
    try:
        return evaluate_checkpoints(
            {"A": files["a"], "B": files["b"]}, {"crops": files["crops"], "samples": None}, lpips="alex", device="cpu"
        )
    finally:
        mp.undo()


def test_rows_match_metrics_computed_directly(results, files):
    assert [(r.model, r.dataset) for r in results] == [
        (m, d) for d in ("crops", "samples") for m in (BICUBIC, "A", "B")
    ]
    generator = load_generator(files["b"])
    lv = LocalVariance()
    per_image = {"psnr": [], "ssim": [], "edge_psnr": [], "flat_psnr": [], "bicubic": []}
    for path in sorted(files["crops"].iterdir()):
        sr, bicubic, hr = _direct(generator, path)
        w = lv(hr)
        kw = {"crop_border": SCALE, "y_channel": True}
        per_image["psnr"].append(metrics.psnr(sr, hr, **kw))
        per_image["ssim"].append(metrics.ssim(sr, hr, **kw))
        per_image["edge_psnr"].append(metrics.edge_psnr(sr, hr, w, **kw))
        per_image["flat_psnr"].append(metrics.flat_psnr(sr, hr, w, **kw))
        per_image["bicubic"].append(metrics.psnr(bicubic, hr, **kw))
    mean = {k: float(torch.cat(v).mean()) for k, v in per_image.items()}
    row = results.row("B", "crops")
    assert row.n_images == 2 and row.scale == SCALE
    assert row.psnr == pytest.approx(mean["psnr"], abs=1e-9)
    assert row.ssim == pytest.approx(mean["ssim"], abs=1e-9)
    assert row.edge_psnr == pytest.approx(mean["edge_psnr"], abs=1e-9)
    assert row.flat_psnr == pytest.approx(mean["flat_psnr"], abs=1e-9)
    assert results.row(BICUBIC, "crops").psnr == pytest.approx(mean["bicubic"], abs=1e-9)
    # The two checkpoints really are different models.
    assert results.row("A", "crops").psnr != pytest.approx(row.psnr, abs=1e-3)


def test_builtin_sample_photos_and_bicubic_row(results):
    rows = [r for r in results if r.dataset == "samples"]
    assert all(r.n_images == len(sample_image_paths("test")) for r in rows)
    bicubic = results.row(BICUBIC, "samples")
    values = []
    for path in sample_image_paths("test"):
        _, up, hr = _direct(lambda x: x, path)
        values.append(metrics.psnr(up, hr, crop_border=SCALE, y_channel=True))
    assert bicubic.psnr == pytest.approx(float(torch.cat(values).mean()), abs=1e-9)
    # Bicubic beats two untrained networks on real photos by far.
    assert bicubic.psnr > max(results.row("A", "samples").psnr, results.row("B", "samples").psnr) + 3


def test_missing_lpips_weights_give_a_note_and_the_other_metrics(results):
    assert all(r.lpips is None for r in results)
    assert all(r.psnr > 0 and 0 < r.ssim <= 1 and r.edge_psnr is not None for r in results)
    note = [n for n in results.notes if n.startswith("LPIPS")]
    assert len(note) == 1 and note[0].startswith("LPIPS: not computed (weights missing:") and "alexnet" in note[0]
    assert "–" in format_table(results)


def test_markdown_and_csv_tables(results, tmp_path):
    paths = write_tables(results, tmp_path / "out")
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert markdown == format_table(results, "markdown")
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[0] == "model"
    assert header[1].startswith("crops ×4:") and header[2].startswith("samples ×4:")
    assert header[1].endswith("PSNR↑ / SSIM↑ / LPIPS↓ / edge PSNR↑ / flat PSNR↑")
    body = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[2:])}
    assert list(body) == [BICUBIC, "A", "B"]
    for model, cells in body.items():
        for dataset, cell in zip(("crops", "samples"), cells):
            psnr_text, ssim_text, lpips_text, *_ = [v.strip("*") for v in cell.split(" / ")]
            row = results.row(model, dataset)
            assert float(psnr_text) == pytest.approx(row.psnr, abs=0.005)
            assert float(ssim_text) == pytest.approx(row.ssim, abs=5e-5)
            assert lpips_text == "–"
    # The best PSNR per test set is in bold: bicubic on the real photos.
    assert body[BICUBIC][1].startswith("**")
    assert "Notes:" in markdown and "Y channel" in markdown

    reader = list(csv.DictReader(io.StringIO(paths["csv"].read_text(encoding="utf-8"))))
    assert [r["model"] for r in reader] == [BICUBIC, "A", "B"]
    for r in reader:
        for dataset in ("crops", "samples"):
            row = results.row(r["model"], dataset)
            assert float(r[f"{dataset}/psnr"]) == pytest.approx(row.psnr, abs=1e-6)
            assert float(r[f"{dataset}/flat_psnr"]) == pytest.approx(row.flat_psnr, abs=1e-6)
            assert r[f"{dataset}/lpips"] == ""
            assert int(r[f"{dataset}/n_images"]) == row.n_images
    with pytest.raises(ValueError, match="fmt"):
        format_table(results, "latex")


def test_lpips_reported_when_backbone_file_exists(files, tmp_path):
    import torchvision

    weights = tmp_path / "alexnet.pth"
    # Random weights are fine for the mechanics; LPIPS only reads the convolutional trunk.
    torch.save({k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}, weights)
    res = evaluate_checkpoints(
        [files["a"]], {"crops": files["crops"]}, lpips="alex",
        backbone_weights=weights, include_bicubic=False, edge_extractor=None, device="cpu",
    )
    assert isinstance(res, EvaluationResults) and len(res) == 1
    row = res.row("model_a", "crops")
    assert row.edge_psnr is None and row.flat_psnr is None
    lpips = metrics.LPIPS("alex", backbone_weights=str(weights))
    generator = load_generator(files["a"])
    values = []
    for path in sorted(files["crops"].iterdir()):
        sr, _, hr = _direct(generator, path)
        values.append(lpips((sr * 255).round() / 255, hr))
    assert row.lpips == pytest.approx(float(torch.cat(values).mean()), rel=1e-5)
    assert any(n.startswith("LPIPS (alex") for n in res.notes)
    assert "edge PSNR" not in format_table(res)


def test_video_test_set_averages_over_all_frames(files):
    res = evaluate_checkpoints(
        {"vsr": files["video"], "img": files["a"]}, {"clips": files["clips"]}, lpips=None, device="cpu"
    )
    for model in (BICUBIC, "vsr", "img"):
        assert res.row(model, "clips").n_images == 8  # 2 clips x 4 frames
    generator = load_generator(files["video"])
    values = []
    for clip in sorted(files["clips"].iterdir()):
        frames = FrameFolder(clip).read(list(range(4)))
        hr = frames[..., : 48 // SCALE * SCALE, : 64 // SCALE * SCALE]
        lr = (imresize(hr, 1 / SCALE).clamp(0, 1) * 255).round() / 255
        sr = super_resolve_clip(generator, lr, tile=0)
        values.append(metrics.psnr(sr, hr, crop_border=SCALE, y_channel=True))
    per_frame = torch.cat(values)
    assert per_frame.numel() == 8
    assert res.row("vsr", "clips").psnr == pytest.approx(float(per_frame.mean()), abs=1e-9)
    assert any("averaged over all frames of all clips" in n and "8 frames of 2 clips" in n for n in res.notes)
    # The video generator on an image test set sees static clips, and the notes say so.
    res_img = evaluate_checkpoints({"vsr": files["video"]}, {"crops": files["crops"]}, lpips=None, include_bicubic=False, device="cpu")
    assert res_img.row("vsr", "crops").n_images == 2
    assert any("static clip" in n for n in res_img.notes)
    # A video file is a video test set too.
    from salightning.data.io import write_video

    frames = FrameFolder(files["clips"] / "clip0").read(list(range(4)))
    write_video((frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), files["root"] / "clip0.mp4")
    res_mp4 = evaluate_checkpoints([files["a"]], {"mp4": files["root"] / "clip0.mp4"}, lpips=None, device="cpu")
    assert res_mp4.row("model_a", "mp4").n_images == 4
    assert list(default_test_sets([generator])) == ["samples", "sample_clips"]
    assert list(default_test_sets([load_generator(files["a"])])) == ["samples"]


def test_comparison_figure(files, monkeypatch, tmp_path):
    logged = []
    fake_wandb = types.SimpleNamespace(run=object(), log=logged.append, Image=lambda path: ("image", path))
    monkeypatch.setitem(__import__("sys").modules, "wandb", fake_wandb)
    chelsea = files["crops"] / "chelsea_crop.png"
    coffee = sample_image_paths("test")[0]
    out = comparison_figure(
        [("chelsea", chelsea), ("coffee", coffee)],
        [(8, 16, 48), (100, 200, 48)],
        {"A": files["a"], "B": files["b"]},
        tmp_path / "fig" / "comparison.png",
        lpips=None,
        cell_size=48,
        device="cpu",
    )
    image = np.asarray(Image.open(out).convert("RGB"))
    n_cols, n_rows = 5, 2  # GT | LR | bicubic | A | B
    assert image.shape == (
        n_rows * (48 + CAPTION_HEIGHT + FIGURE_PADDING) + FIGURE_PADDING,
        n_cols * (48 + FIGURE_PADDING) + FIGURE_PADDING,
        3,
    )
    # With cell_size == crop size the GT cell is the 8-bit HR crop itself.
    gt = (read_image(chelsea)[:, 8:56, 16:64] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    p = FIGURE_PADDING
    np.testing.assert_array_equal(image[p : p + 48, p : p + 48], gt)
    # Captions are drawn (dark pixels in the band under the bicubic crop).
    band = image[p + 48 : p + 48 + CAPTION_HEIGHT, p + 2 * (48 + p) : p + 2 * (48 + p) + 48]
    assert (band < 100).any()
    assert logged == [{"comparison": ("image", str(out))}]
    with pytest.raises(ValueError, match="does not fit"):
        comparison_figure([("chelsea", chelsea)], [(40, 0, 48)], {"A": files["a"]}, tmp_path / "x.png", lpips=None, device="cpu")


def test_cli_writes_tables_and_figure(files, tmp_path, capsys, no_torch_cache):
    out = tmp_path / "eval"
    evaluate_main(
        [
            "--ckpt_path", f"first={files['a']}", str(files["b"]),
            "--test_sets", f"mine={files['crops']}",
            "--output", str(out),
            "--compare", "astronaut_crop:0,0,32",
            "--edge_extractor", "salightning.edges.Canny",
        ]
    )
    printed = capsys.readouterr().out
    assert "| model | mine ×4:" in printed and "| first |" in printed and "| model_b |" in printed
    assert "LPIPS: not computed (weights missing" in printed and "W = Canny(" in printed
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["model"] for r in rows] == [BICUBIC, "first", "model_b"]
    assert (out / "results.md").is_file()
    assert Image.open(out / "comparison.png").size == (5 * (192 + FIGURE_PADDING) + FIGURE_PADDING, 192 + CAPTION_HEIGHT + 2 * FIGURE_PADDING)


def test_input_errors(files, tmp_path):
    with pytest.raises(ValueError, match="several files are named"):
        evaluate_checkpoints([files["a"], files["a"]], {"crops": files["crops"]}, lpips=None)
    with pytest.raises(ValueError, match="scale=2"):
        evaluate_checkpoints([files["a"]], {"crops": files["crops"]}, scale=2, lpips=None)
    with pytest.raises(ValueError, match="reserved"):
        evaluate_checkpoints({BICUBIC: files["a"]}, {"crops": files["crops"]}, lpips=None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_checkpoints([files["a"]], {"nope": tmp_path / "nope"}, lpips=None)
    with pytest.raises(ValueError, match="built-in"):
        evaluate_checkpoints([files["a"]], {"set14": None}, lpips=None)
    with pytest.raises(ValueError, match="lpips"):
        evaluate_checkpoints([files["a"]], {"crops": files["crops"]}, lpips="squeezy")


def test_paired_lr_folder_gives_the_same_numbers(files, results, tmp_path):
    # LR PNGs written from the on-the-fly LR are read back bit-exactly: same rows as without them.
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    for path in files["crops"].iterdir():
        _, _, hr = _direct(lambda x: x, path)
        _save_png(imresize(hr, 1 / SCALE)[0], lr_dir / path.name)
    res = evaluate_checkpoints({"B": files["b"]}, {"crops": (files["crops"], lr_dir)}, lpips=None, device="cpu")
    assert res.row("B", "crops").psnr == pytest.approx(results.row("B", "crops").psnr, abs=1e-9)
    assert res.row(BICUBIC, "crops").ssim == pytest.approx(results.row(BICUBIC, "crops").ssim, abs=1e-9)
    assert any("LR read from files" in n for n in res.notes)


def test_format_table_several_scales_and_missing_cells():
    from salightning.evaluate import ResultRow

    rows = [
        ResultRow("bicubic", "set5", 2, 33.66, 0.9299, None, 30.1, 36.2, 5),
        ResultRow("net", "set5", 2, 35.123, 0.94567, 0.05, 31.0, 37.0, 5),
        ResultRow("net", "set14", 4, float("nan"), 0.7, 0.2, None, None, 14),
    ]
    markdown = format_table(rows)
    assert "| bicubic (×2) | 33.66 / 0.9299 / – / 30.10 / 36.20 | – |" in markdown
    assert "| net (×2) | **35.12** / **0.9457** / 0.0500 / **31.00** / **37.00** | – |" in markdown
    assert "| net (×4) | – | – / 0.7000 / 0.2000 / – / – |" in markdown
    assert "Notes:" not in markdown
    reader = list(csv.DictReader(io.StringIO(format_table(rows, "csv"))))
    assert [(r["model"], r["scale"]) for r in reader] == [("bicubic", "2"), ("net", "2"), ("net", "4")]
    assert reader[0]["set14/psnr"] == "" and reader[2]["set14/ssim"] == "0.700000" and reader[2]["set14/n_images"] == "14"
    with pytest.raises(ValueError, match="empty"):
        format_table([])


def test_test_with_a_config_and_evaluate_give_the_same_numbers(tmp_path, photos, capsys, monkeypatch):
    """One metrics path: `salightning test --config` (the LightningModule's test loop) and
    `salightning evaluate` score the same checkpoint on the same whole images identically."""
    from conftest import make_project, run_main, tiny_config, write_config

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_project(tmp_path / "user", photos)
    for i, photo in enumerate(photos[:3]):  # a held-out test folder of whole 80x72 images
        (root / "test").mkdir(exist_ok=True)
        crop = photo[:, 150:230, 120:192].permute(1, 2, 0).numpy()
        Image.fromarray((crop * 255).round().astype(np.uint8)).save(root / "test" / f"t{i}.png")
    config = tiny_config(root, max_epochs=1)
    config["data"]["init_args"].update(test_hr=str(root / "test"), eval_patch_size=None)
    path = write_config(root / "cfg.yaml", config)
    code, _, err = run_main(["fit", "--config", path], capsys)
    assert code == 0, err[-3000:]
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(p.name for p in (root / "run").rglob("*"))

    code, _, err = run_main(["test", "--config", path, "--ckpt_path", ckpt], capsys)
    assert code == 0, err[-3000:]
    rows = [r for f in sorted((root / "run").rglob("metrics.csv")) for r in csv.DictReader(f.open()) if r.get("test/psnr")]
    assert len(rows) == 1, rows
    tested = {k.split("/", 1)[1]: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v}

    out = tmp_path / "evaluation"
    code, _, err = run_main(["evaluate", "--ckpt_path", f"m={ckpt}", "--test_sets", f"t={root / 'test'}", "--output", out, "--lpips", "none", "--no_bicubic"], capsys)
    assert code == 0, err[-3000:]
    row = next(csv.DictReader((out / "results.csv").open()))
    evaluated = {name: float(row[f"t/{name}"]) for name in ("psnr", "ssim", "edge_psnr", "flat_psnr")}
    assert int(row["t/n_images"]) == 3
    for name, value in evaluated.items():
        assert tested[name] == pytest.approx(value, abs=1e-4), (name, tested, evaluated)


def test_a_config_that_crops_for_the_discriminator_says_so(tmp_path, photos, capsys, monkeypatch):
    from conftest import make_project, run_main, tiny_config, write_config

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_project(tmp_path / "user", photos)
    path = write_config(root / "cfg.yaml", tiny_config(root, max_epochs=1))  # eval_patch_size: 32
    code, _, err = run_main(["validate", "--config", path], capsys)
    assert code == 0, err[-3000:]
    assert "centre 32x32 HR crop" in err and "salightning evaluate" in err


class _NearestPlusTwoLevels(torch.nn.Module):
    """A x4 "generator" whose output is known by hand: the LR image, nearest-upsampled, 2 levels brighter."""

    scale, num_frames, input_upsampled = 4, 1, False

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))  # inference reads the device from the parameters

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest") * self.gain + 2 / 255


def test_evaluation_matches_psnr_and_ssim_worked_out_by_hand(tmp_path):
    """Flat colour images: the benchmark LR is the same colour, the output is 2 levels above it in
    every channel, so on MATLAB's Y (16 + 65.481 R + 128.553 G + 24.966 B) every pixel is off by
    2 * 219 / 255 levels: PSNR = 20 log10(255 / 1.71765) = 43.432 dB; SSIM of two flat images is
    (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 * 255)^2."""
    import math

    colours = [(51, 128, 179), (200, 30, 90)]
    folder = tmp_path / "flat"
    folder.mkdir()
    for i, colour in enumerate(colours):
        Image.fromarray(np.full((48, 64, 3), colour, dtype=np.uint8)).save(folder / f"flat{i}.png")
    results = evaluate_checkpoints({"g": _NearestPlusTwoLevels()}, {"flat": folder}, lpips=None, edge_extractor=None,
                                   include_bicubic=False, device="cpu")
    row = results.row("g", "flat")
    assert row.n_images == 2
    assert row.psnr == pytest.approx(20 * math.log10(255 / (2 * 219 / 255)), abs=1e-6)
    c1 = (0.01 * 255) ** 2
    ssims = []
    for r, g, b in colours:
        y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
        y_sr = y + 2 * 219 / 255
        ssims.append((2 * y * y_sr + c1) / (y * y + y_sr * y_sr + c1))
    assert row.ssim == pytest.approx(sum(ssims) / 2, abs=1e-9)
