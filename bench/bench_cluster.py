"""Cluster-grade runs on this CPU (issue 12), through the console script as users run it:

1. wall time of one stage-2 batch (the quickstart's tiny SA-ESRGAN) on 2 gloo processes vs 1,
   and the DDP strategy salightning chose;
2. batches lost by ``kill -9`` at a random batch, with and without ``LastCheckpoint``'s periodic
   checkpoint (the killed run is resumed from ``last.ckpt``; what it lost is trained again).

    python bench/bench_cluster.py [--batches 24] [--kills 3] [--json out.json]

Per-batch times come from a callback writing ``time.perf_counter()`` at each batch end; the
first 4 batches of a run are dropped (warm-up, worker start).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("salightning")

HELPERS = '''
import os, signal, time
import pytorch_lightning as pl


class BatchClock(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(f"{time.perf_counter()} {type(trainer.strategy).__name__} {trainer.strategy._ddp_kwargs if hasattr(trainer.strategy, '_ddp_kwargs') else ''}\\n")


class KillAt(pl.Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.batches_seen == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def _run(args: list[str], cwd: Path, timeout: float = 900) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONPATH=str(cwd))
    env.pop("SALIGHTNING_RUN_DIR", None)
    with open(cwd / "bench.log", "a") as log:
        process = subprocess.Popen([str(SCRIPT), *map(str, args)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise


def _quickstart(root: Path, batches: int, batch_size: int, *extra: str) -> list:
    return ["fit", "--config", REPO / "configs" / "quickstart.yaml", "--trainer.default_root_dir", root / "exp",
            "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
            "--data.init_args.batch_size", batch_size, "--data.init_args.samples_per_epoch", batches * batch_size, *extra]


def batch_time(root: Path, devices: int, batches: int) -> tuple[float, str]:
    clock = root / f"clock{devices}.txt"
    # The same per-process batch (8): 2 processes train twice the samples per batch.
    rc = _run(_quickstart(root, batches * devices, 8, "--trainer.devices", devices,
                          "--trainer.callbacks+=benchhelpers.BatchClock", f"--trainer.callbacks.path={clock}"), root)
    if rc != 0:
        raise RuntimeError(f"fit on {devices} process(es) failed (rc {rc}); see {root / 'bench.log'}")
    lines = clock.read_text().split("\n")
    times = [float(line.split()[0]) for line in lines if line]
    strategy = " ".join(lines[0].split()[1:])
    steps = [b - a for a, b in zip(times[4:], times[5:])]
    return statistics.median(steps), strategy


def lost_by_kill(root: Path, kill_at: int, every: int | None, batches: int) -> int:
    extra = ["--trainer.callbacks+=benchhelpers.KillAt", f"--trainer.callbacks.batch={kill_at}"]
    if every is None:  # only the shipped epoch-end checkpoints (epochs of 8 batches)
        extra += ["--trainer.max_epochs", "100"]
        args = _quickstart(root, 8, 4, *extra)
    else:
        args = _quickstart(root, batches, 4, "--trainer.callbacks+=salightning.callbacks.LastCheckpoint",
                           f"--trainer.callbacks.every_n_batches={every}", *extra)
    rc = _run(args, root)
    if rc != -signal.SIGKILL:
        raise RuntimeError(f"expected the run to be killed, rc {rc}; see {root / 'bench.log'}")
    from salightning.checkpoints import load_checkpoint_file

    lasts = sorted((root / "exp").glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    saved = load_checkpoint_file(lasts[-1])["salightning"]["batches_seen"] if lasts else 0
    return kill_at - saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--every", type=int, default=5, help="LastCheckpoint every_n_batches for the kill test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("one", "two"):
            (root / name).mkdir()
            (root / name / "benchhelpers.py").write_text(HELPERS)
        one, _ = batch_time(root / "one", 1, args.batches)
        two, strategy = batch_time(root / "two", 2, args.batches)
        results.update(ddp_stage2_batch_s_1proc=one, ddp_stage2_batch_s_2proc=two, ddp_2proc_over_1proc=two / one, ddp_strategy=strategy)
        print(f"stage-2 batch (8 samples per process): 1 process {one * 1e3:.0f} ms, 2 gloo processes {two * 1e3:.0f} ms "
              f"-> ratio {two / one:.2f} (2x the samples per batch); strategy: {strategy}")
        rng = random.Random(args.seed)
        for every in (None, args.every):
            lost = []
            for k in range(args.kills):
                folder = root / f"kill_{every}_{k}"
                folder.mkdir()
                (folder / "benchhelpers.py").write_text(HELPERS)
                at = rng.randint(9, 40)
                lost.append(lost_by_kill(folder, at, every, 48))
            key = "kill9_lost_batches_epoch_end_only" if every is None else f"kill9_lost_batches_every_{every}"
            results[key] = lost
            print(f"kill -9 at random batches, {'epoch-end checkpoints only (8-batch epochs)' if every is None else f'LastCheckpoint every {every} batches'}: lost {lost} batches")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
