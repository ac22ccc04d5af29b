"""See the run: one metrics.csv per run across resumes, curves.png (callback and `salightning
plot`), labelled sample panels, training rows for short runs, TensorBoard beside the CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_module, make_project, make_trainer, run_main, tiny_config, write_config
from salightning.callbacks import LABEL_HEIGHT, TrainingCurves, make_panel
from salightning.loggers import CSVLogger


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_resumed_run_continues_its_metrics_csv_and_replaces_the_steps_it_relogs(tmp_path):
    first = CSVLogger(str(tmp_path))
    for step in range(10):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    resumed = CSVLogger(str(tmp_path))  # killed after step 9, resumed from a checkpoint at step 6
    for step in range(6, 12):
        resumed.log_metrics({"train/loss": 100.0 + step, "val/psnr": 30.0}, step=step)
    resumed.save()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.csv")) == ["logs/metrics.csv"]
    rows = _rows(tmp_path / "logs" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(12))
    assert [float(r["train/loss"]) for r in rows] == [0, 1, 2, 3, 4, 5, 106, 107, 108, 109, 110, 111]
    assert rows[0]["val/psnr"] == "" and rows[-1]["val/psnr"] == "30.0"


def _fake_run(run):
    (run / "logs").mkdir(parents=True)
    with open(run / "logs" / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, ["epoch", "step", "train/loss", "train/sa_share", "train/sa_beta", "train/lr_g", "val/psnr", "val/lpips"])
        writer.writeheader()
        for step in range(1, 41):
            writer.writerow({"epoch": step // 10, "step": step, "train/loss": 1 / step, "train/sa_share": 0.15, "train/sa_beta": 2 + step / 40, "train/lr_g": 1e-4})
            if step % 10 == 0:
                writer.writerow({"epoch": step // 10, "step": step, "val/psnr": 25 + step / 10, "val/lpips": 0.3 - step / 400})


def test_salightning_plot_draws_the_curves_of_a_run_folder(tmp_path, capsys):
    run = tmp_path / "runs" / "x" / "version_0"
    _fake_run(run)
    code, out, err = run_main(["plot", run], capsys)
    assert code == 0, err
    image = Image.open(run / "curves.png")
    assert image.size[0] >= 1000 and image.size[1] >= 600 and str((run / "curves.png").resolve()) in out
    pixels = torch.from_numpy(np.asarray(image.convert("L"))).float()
    assert pixels.std() > 10  # lines and text, not a blank canvas
    code, _, err = run_main(["plot", tmp_path / "nowhere"], capsys)
    assert code == 2 and "is not a folder" in err and len(err.strip().splitlines()) == 1


def test_panel_rows_carry_column_labels(photo_batch):
    hr = photo_batch[:2, :, :64, :64]
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    plain = make_panel(lr, hr, hr, hr[:, :1], labels=False)
    labelled = make_panel(lr, hr, hr, hr[:, :1], names=["coffee", "rocket"])
    assert plain.shape == (3, 128, 256) and labelled.shape == (3, 2 * (64 + LABEL_HEIGHT), 256)
    strip = labelled[:, :LABEL_HEIGHT]
    assert strip.max() > 0.9 and strip.mean() < 0.5  # white text on black
    for column in range(4):  # every column is labelled
        assert strip[:, :, column * 64 : (column + 1) * 64].max() > 0.9, column
    torch.testing.assert_close(labelled[:, LABEL_HEIGHT : LABEL_HEIGHT + 64], plain[:, :64])


def test_short_runs_log_enough_training_rows_and_end_with_curves(tmp_path, patch_loaders, capsys):
    train, val = patch_loaders  # 4 batches an epoch
    logger = CSVLogger(str(tmp_path))
    trainer = make_trainer(tmp_path, max_epochs=5, logger=logger, log_every_n_steps=50, callbacks=[TrainingCurves(min_rows=10)])
    trainer.fit(make_module(stage=1, eval_lpips=None), train, val)
    assert "training rows every 2 batches (trainer.log_every_n_steps=50 would log 0 of this run's 20 batches)" in capsys.readouterr().err
    rows = [r for r in _rows(tmp_path / "logs" / "metrics.csv") if r.get("train/loss")]
    assert len(rows) == 10
    assert Image.open(tmp_path / "curves.png").size[0] > 0


@pytest.mark.slow
def test_a_cli_run_has_one_metrics_csv_after_a_resume_curves_and_tensorboard_events(tmp_path, photos, capsys, monkeypatch):
    """The default CSV logger beside a user's TensorBoardLogger: one logs/metrics.csv through a
    resume, curves.png, TensorBoard event files holding the same training scalars."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = make_project(tmp_path / "user", photos)
    config = tiny_config(root, max_epochs=1)
    config["trainer"]["default_root_dir"] = str(root / "runs")
    config["trainer"]["logger"] = [{"class_path": "pytorch_lightning.loggers.TensorBoardLogger", "init_args": {"save_dir": str(root / "tb")}}]
    config["trainer"]["callbacks"] = [{"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
                                      {"class_path": "salightning.callbacks.RunSummary"}]
    path = write_config(root / "cfg.yaml", config)
    code, _, err = run_main(["fit", "--config", path], capsys)
    assert code == 0, err[-3000:]
    code, out, err = run_main(["fit", "--config", path, "--trainer.max_epochs", "2", "--ckpt_path", "last"], capsys)
    assert code == 0, err[-3000:]
    run = root / "runs" / "version_0"
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("metrics.csv")) == ["logs/metrics.csv"]
    steps = [int(r["step"]) for r in _rows(run / "logs" / "metrics.csv") if r.get("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 8, steps  # 2 epochs x 4 batches, no repeats
    assert (run / "curves.png").is_file() and f"curves          : {(run / 'curves.png').resolve()}" in out
    events = sorted((root / "tb").rglob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/sa_share", "val/psnr"} <= set(scalars), scalars
