"""Exports (salightning.export): safetensors with the architecture, ONNX under onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHIPPED_STAGE1, make_checkpoint, run_main

from salightning.checkpoints import generator_config, load_generator, load_pretrained, load_state_dict_file
from salightning.export import load_exported, save_onnx, save_safetensors
from salightning.models import RRDBNet, VSRResNet

CONFIG = {"class_path": "salightning.models.RRDBNet", "init_args": {"num_features": 32, "num_blocks": 2, "growth_channels": 16, "scale": 4}}


@pytest.fixture(scope="module")
def trained_tiny() -> RRDBNet:
    return load_pretrained(RRDBNet(**CONFIG["init_args"]), SHIPPED_STAGE1).eval()


def test_safetensors_round_trip_rebuilds_the_architecture(trained_tiny, photos, tmp_path):
    path = save_safetensors(trained_tiny, CONFIG, tmp_path / "g.safetensors")
    rebuilt = load_exported(path)
    assert isinstance(rebuilt, RRDBNet) and rebuilt.scale == 4
    same = load_pretrained(RRDBNet(**CONFIG["init_args"]), path)
    x = photos[1][:, 100:164, 150:214][None]
    with torch.no_grad():
        assert torch.equal(rebuilt(x), trained_tiny(x))
        assert torch.equal(same(x), trained_tiny(x))
    with pytest.raises(FileExistsError, match="g.safetensors"):
        save_safetensors(trained_tiny, CONFIG, path)


def test_a_plain_export_needs_the_class_path(trained_tiny, tmp_path):
    torch.save(trained_tiny.state_dict(), tmp_path / "g.pth")
    with pytest.raises(ValueError, match="--generator"):
        load_exported(tmp_path / "g.pth")
    rebuilt = load_exported(tmp_path / "g.pth", "salightning.models.RRDBNet", CONFIG["init_args"])
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), trained_tiny.state_dict().values()))


def test_onnx_matches_torch_on_a_real_photo_with_dynamic_sizes(trained_tiny, photos, tmp_path):
    import warnings

    import onnxruntime

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = save_onnx(trained_tiny, tmp_path / "g.onnx")
    # the generator's input checks are skipped while tracing: they would be constants in the graph
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)], [str(w.message) for w in caught]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (photos[1][:, 100:148, 150:214][None], torch.stack([photos[0][:, :40, :56], photos[2][:, 10:50, 20:76]])):
        (got,) = session.run(["sr"], {"lr": x.numpy()})
        with torch.no_grad():
            expected = trained_tiny(x).numpy()
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) <= 1e-3


def test_export_cli_formats(tmp_path, capsys, photos):
    torch.manual_seed(0)
    init_args = {"num_frames": 3, "frame_features": 4, "num_features": 8, "num_blocks": 1, "scale": 2}
    ckpt = make_checkpoint(tmp_path / "vsr.ckpt", VSRResNet(**init_args), "salightning.models.VSRResNet", init_args)
    code, _, err = run_main(["export", "--ckpt_path", ckpt, "--output", tmp_path / "g.safetensors", "--format", "safetensors"], capsys)
    assert code == 0, err
    assert generator_config(load_state_dict_file(ckpt), ckpt)["class_path"] == "salightning.models.VSRResNet"
    rebuilt, original = load_exported(tmp_path / "g.safetensors"), load_generator(ckpt)
    assert isinstance(rebuilt, VSRResNet) and rebuilt.num_frames == 3
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), original.state_dict().values()))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_main(["export", "--ckpt_path", ckpt, "--output", tmp_path / "g.onnx", "--format", "onnx"], capsys)
    assert code == 0, err
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)], [str(w.message) for w in caught]
    assert (tmp_path / "g.onnx").stat().st_size > 0


def test_predict_reads_exported_files(tmp_path, capsys, photos):
    from conftest import save_png
    torch.manual_seed(0)
    init_args = {"num_features": 8, "num_blocks": 1, "growth_channels": 4, "scale": 4}
    ckpt = make_checkpoint(tmp_path / "rrdb.ckpt", RRDBNet(**init_args), "salightning.models.RRDBNet", init_args)
    save_png(photos[1][:, 100:148, 150:214], tmp_path / "in" / "cat.png")
    outputs = {}
    for name, extra in [
        ("ckpt", []),
        ("safetensors", []),
        ("pth", ["--generator", "salightning.models.RRDBNet", "--generator_init_args", str(init_args)]),
    ]:
        weights = ckpt if name == "ckpt" else tmp_path / f"g.{name}"
        if name != "ckpt":
            code, _, err = run_main(["export", "--ckpt_path", ckpt, "--output", weights, "--format", name], capsys)
            assert code == 0, err
        code, _, err = run_main(["predict", "--ckpt_path", weights, "--input", tmp_path / "in" / "cat.png", "--output", tmp_path / name, *extra], capsys)
        assert code == 0, err
        outputs[name] = (tmp_path / name / "cat.png").read_bytes()
    assert outputs["safetensors"] == outputs["ckpt"] == outputs["pth"]
    code, _, err = run_main(["predict", "--ckpt_path", tmp_path / "g.pth", "--input", tmp_path / "in" / "cat.png", "--output", tmp_path / "x"], capsys)
    assert code != 0 and "--generator" in err


@pytest.mark.parametrize(
    "init_args",
    [
        {"scale": 4},
        {"scale": 2},
        {"scale": 2, "pixel_unshuffle": True},  # Real-ESRGAN x2plus's layout
        {"scale": 1, "pixel_unshuffle": True},
    ],
    ids=["x4", "x2", "x2-pixel-unshuffle", "x1-pixel-unshuffle"],
)
@pytest.mark.parametrize("format", ["pth", "safetensors"])
def test_spandrel_loads_our_rrdbnet_exports_and_gives_the_same_output(tmp_path, capsys, photos, init_args, format):
    """What chaiNNer and ComfyUI load: spandrel detects ESRGAN from the keys alone (growth_channels 32)."""
    import spandrel

    torch.manual_seed(0)
    init_args = {"num_features": 16, "num_blocks": 2, "growth_channels": 32, **init_args}
    ckpt = make_checkpoint(tmp_path / "m.ckpt", RRDBNet(**init_args), "salightning.models.RRDBNet", init_args)
    code, _, err = run_main(["export", "--ckpt_path", ckpt, "--output", tmp_path / f"g.{format}", "--format", format], capsys)
    assert code == 0, err
    descriptor = spandrel.ModelLoader().load_from_file(str(tmp_path / f"g.{format}"))
    assert descriptor.architecture.name == "ESRGAN" and descriptor.scale == init_args["scale"]
    x = photos[1][:, 100:140, 150:198][None]
    with torch.no_grad():
        expected = load_generator(ckpt)(x)
        got = descriptor.model.eval()(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
