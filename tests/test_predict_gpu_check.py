"""bench/gpu_check.sh in its CI-sized CPU form: every piece runs and writes its figures."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from conftest import run_in_group

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def test_gpu_check_runs_on_the_cpu_and_writes_one_line_per_figure(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    # run_quick (bench/run.py --quick) alone takes about a minute here: the other pieces are what is new
    result = run_in_group(["bash", SCRIPT, "--device", "cpu", "--out", out, "--skip", "run_quick"], timeout=90, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    expected = {
        "stage2_fp32_s_per_batch", "stage2_bf16_mixed_s_per_batch", "stage2_bf16_mixed_channels_last_s_per_batch",
        "predict_large_image_32_s", "predict_large_image_bf16_s", "predict_clip_bf16_frames_per_s",
        "ddp_quickstart_s", "ddp_quickstart_backend", "gpu_check_seconds",
    }
    assert expected <= set(figures), sorted(figures)
    assert figures["ddp_quickstart_backend"] == "gloo"
    assert all(math.isfinite(v) and v > 0 for v in figures.values() if not isinstance(v, str))
    lines = [line for line in result.stdout.splitlines() if " = " in line and line.split(" = ")[0] in figures]
    assert len(lines) == len(figures)
    assert "run_quick: skipped" in result.stdout
