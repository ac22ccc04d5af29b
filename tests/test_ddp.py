"""Stage 2 under 2-process DDP on CPU (gloo). Run through a subprocess: plain DDP re-launches the
calling script, which must not be pytest itself."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import run_in_group

SCRIPT = textwrap.dedent(
    """
    import sys
    from functools import partial
    from pathlib import Path

    import pytorch_lightning as pl
    import torch

    sys.path.insert(0, {tests_dir!r})
    from conftest import PhotoPatches, load_photo

    from salightning.edges import LocalVariance
    from salightning.losses import AdversarialLoss, SAPixelLoss
    from salightning.models import RRDBNet, VGGStyleDiscriminator
    from salightning.training import SRGANModule

    torch.set_num_threads(1)
    out = Path({out!r})
    pl.seed_everything(0)
    module = SRGANModule(
        generator=RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=4),
        discriminator=VGGStyleDiscriminator(num_features=8, input_size=32),
        adversarial_loss=AdversarialLoss("relativistic"),
        pixel_loss=SAPixelLoss(beta1=0.01, beta2=0.0, edge_extractor=LocalVariance()),
        optimizer_g=partial(torch.optim.Adam, lr=1e-3),
        optimizer_d=partial(torch.optim.Adam, lr=1e-3),
        lr_milestones=[3],
        sa_target_share=0.15,
        sa_calibration_batches=2,
        ema_decay=0.9,
    )
    photos = [load_photo(n) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    train = torch.utils.data.DataLoader(PhotoPatches(photos, n=16, seed=0), batch_size=2)
    val = torch.utils.data.DataLoader(PhotoPatches(photos, n=4, seed=1), batch_size=2)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", max_epochs=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, train, val)
    state = {{k: v for k, v in module.state_dict().items()}}
    state["batches_seen"] = torch.tensor(module.batches_seen)
    state["val_psnr"] = trainer.callback_metrics["val/psnr"]
    torch.save(state, out / f"rank{{trainer.global_rank}}.pt")
    """
)


@pytest.mark.slow
def test_ddp_two_process_stage2_ranks_agree(tmp_path):
    tests_dir = str(Path(__file__).parent)
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(tests_dir=tests_dir, out=str(tmp_path)))
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", PL_DISABLE_FORK="1")
    proc = run_in_group([sys.executable, str(script)], cwd=tmp_path, env=env, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # each rank saw 4 of the 8 batches of each epoch (DistributedSampler halves the data)
    assert int(r0["batches_seen"]) == int(r1["batches_seen"]) == 8
    assert r0.keys() == r1.keys()
    # BatchNorm running statistics are per rank between DDP's buffer broadcasts (rank 0's are
    # checkpointed); everything else, parameters, EMA and calibrated beta included, is identical.
    compared = [k for k in r0 if not k.endswith(("running_mean", "running_var"))]
    assert any(k.startswith("generator_ema.") for k in compared)
    for key in compared:
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0, msg=f"ranks differ on {key}")
    # the auto-calibrated SA beta is the same on both ranks and non-zero
    assert float(r0["objective.pixel_loss.beta2"]) > 0


VALIDATE_SCRIPT = textwrap.dedent(
    """
    import sys
    import pytorch_lightning as pl
    import torch

    from salightning.data import ImageSRDataModule
    from salightning.losses import SAPixelLoss
    from salightning.models import RRDBNet
    from salightning.training import SRGANModule

    torch.set_num_threads(1)
    pl.seed_everything(0)
    module = SRGANModule(generator=RRDBNet(num_features=8, num_blocks=1, growth_channels=4, scale=4), pixel_loss=SAPixelLoss())
    data = ImageSRDataModule(train_hr={val!r}, val_hr={val!r}, scale=4, patch_size=32, batch_size=1, num_workers=0, eval_patch_size=64)
    devices = int(sys.argv[1])
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, datamodule=data)
    if trainer.global_rank == 0:
        torch.save({{k: float(v) for k, v in metrics.items()}}, {out!r} + f"/val{{devices}}.pt")
    """
)


@pytest.mark.slow
def test_ddp_validation_means_are_exact_with_an_odd_number_of_images(tmp_path, photos):
    """3 validation images on 2 processes: a padding DistributedSampler would count one twice."""
    from torchvision.utils import save_image

    val = tmp_path / "val"
    val.mkdir()
    for i, p in enumerate(photos[:3]):
        save_image(p[:, :128, :128], val / f"img{i}.png")
    script = tmp_path / "ddp_validate.py"
    script.write_text(VALIDATE_SCRIPT.format(val=str(val), out=str(tmp_path)))
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    for devices in ("1", "2"):
        proc = run_in_group([sys.executable, str(script), devices], cwd=tmp_path, env=env, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "sync_dist" not in proc.stderr  # the metrics are synchronised by torchmetrics, and Lightning is told so
    single = torch.load(tmp_path / "val1.pt")
    ddp = torch.load(tmp_path / "val2.pt")
    assert single.keys() == ddp.keys() and "val/psnr" in single
    for key in single:
        assert ddp[key] == pytest.approx(single[key], rel=1e-6, abs=1e-9), key
