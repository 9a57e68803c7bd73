"""INT8 export: calibrated on the user's clips, checked against fp32, refused with the fp32 export kept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import graphs_from, make_checkpoint, run_infer, run_script, write_clip

from pipeline.data.features import ExtractorConfig
from pipeline.data.video import VideoReader
from pipeline.inference import quantize
from pipeline.inference.export import ExportError, read_manifest
from pipeline.inference.predictor import ActionPredictor


@pytest.fixture(scope="module")
def setting(crowd_export, tmp_path_factory):
    """A crowd-seeing random extractor's checkpoint listing its training clips, and those clips."""
    tmp = tmp_path_factory.mktemp("int8")
    clips = [write_clip(tmp / "clips" / f"{i}.avi", frames=12, size=(120, 96), seed=i) for i in range(5)]
    state = torch.load(crowd_export[0], weights_only=False)
    state["train_videos"] = [str(c) for c in clips]  # as train.py records them
    torch.save(state, tmp / "c.ckpt")
    return tmp, tmp / "c.ckpt", clips


@pytest.fixture(scope="module")
def int8_folder(setting, crowd_export):
    """``infer.py --export DIR --int8`` as a user runs it; the fp32 graphs are the session's export of the
    same checkpoint (``crowd_export``): calibration, quantization and the check run here."""
    tmp, ckpt, _ = setting
    folder = tmp / "int8"
    with pytest.MonkeyPatch.context() as monkeypatch:
        graphs_from(crowd_export[1], monkeypatch)
        code, out, err = run_infer("--export", str(folder), "-c", str(ckpt), "--int8", "--calibration-frames", "40", "-q")
    assert code == 0, err[-2000:]
    assert "int8 extractor: calibrated on" in out and "held-out" in out
    return folder


def people(predictor: ActionPredictor, frames: np.ndarray) -> list[np.ndarray]:
    predictor.reset()
    out = [predictor(frames[i : i + 4]) for i in range(0, len(frames), 4)]
    return [np.concatenate([getattr(p, k) for p in out]) for k in ("probs", "boxes")] + [np.concatenate([p.frame + 4 * i for i, p in enumerate(out)])]


def test_int8_folder_is_calibrated_on_the_training_clips_checked_and_runs_on_both_runtimes(setting, int8_folder, tmp_path):
    _, ckpt, clips = setting
    m = read_manifest(int8_folder)
    q = m["int8"]
    assert m["precision"] == "int8" and "extractor_int8" in m["graphs"] and "extractor" in m["graphs"]  # fp32 kept beside it
    assert (int8_folder / "extractor_int8.onnx").is_file() and (int8_folder / "extractor_int8.xml").is_file()
    assert q["calibration"]["source"] == "the checkpoint's 5 training videos" and q["calibration"]["frames"] >= 32
    assert q["check"]["frames"] > 0 and q["check"]["people_found"] >= quantize.LIMITS["people_found"]
    assert not list(int8_folder.glob(".*"))  # the calibration cache and OpenVINO's source graph are gone
    # the INT8 graph holds integer weights and quantize/dequantize pairs: it really is quantized
    import onnx

    ops = {n.op_type for n in onnx.load(int8_folder / "extractor_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    frames = np.stack([f for _, f in VideoReader(str(write_clip(tmp_path / "held_out.avi", frames=12, size=(120, 96), seed=9)))])
    want = people(ActionPredictor(ckpt, device="cpu", backend="torch"), frames)
    for backend in ("onnxruntime", "openvino"):
        p = ActionPredictor(int8_folder, device="cpu", backend=backend)
        assert p.extractor.graph.path.stem == "extractor_int8"
        got = people(p, frames)
        assert len(got[2]) >= 0.9 * len(want[2])  # nearly the same people...
        assert np.abs(np.sort(got[0].max(1))[:10] - np.sort(want[0].max(1))[:10]).max() < 0.2  # ...and close, not equal, probabilities


def test_a_quantization_that_loses_too_much_or_fails_keeps_the_fp32_export(setting, int8_folder, monkeypatch):
    tmp, ckpt, _ = setting
    graphs_from(int8_folder, monkeypatch)  # the fp32 graphs of the same checkpoint; calibration and the check run here
    monkeypatch.setitem(quantize.LIMITS, "feature_cosine_p10", 1.01)  # nothing can meet it
    folder = tmp / "refused"
    with pytest.raises(ExportError, match=r"loses too much on held-out frames: feature_cosine_p10 .* fp32 export is written in") as e:
        quantize.export_int8(ckpt, folder, frames=16, progress=False)
    assert "\n" not in str(e.value)
    m = read_manifest(folder)
    assert m["precision"] == "fp32" and "int8" not in m and not list(folder.glob("extractor_int8*")) and not list(folder.glob(".*"))
    assert ActionPredictor(folder, device="cpu", backend="onnxruntime").extractor.graph.path.stem == "extractor"


def test_a_quantizer_that_fails_is_one_line_and_leaves_nothing(setting, int8_folder, tmp_path, monkeypatch):
    _, _, clips = setting

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported model IR version\ndetails")

    monkeypatch.setattr("onnxruntime.quantization.quantize_static", broken)
    folder = shutil.copytree(int8_folder, tmp_path / "copy")
    for f in folder.glob("extractor_int8*"):
        f.unlink()
    before = sorted(folder.iterdir())
    with pytest.raises(quantize.QuantizationError, match=r"^INT8 quantization failed \(details\)$"):
        quantize.quantize(folder, json.loads((folder / "export.json").read_text()), [str(c) for c in clips], "clips", count=16, progress=False)
    assert sorted(folder.iterdir()) == before


def test_calibration_frames_come_from_the_checkpoint_or_calibrate_and_are_said_when_missing(setting, tmp_path):
    tmp, ckpt, clips = setting
    videos, source = quantize.calibration_videos(ckpt, [str(clips[0].parent)])
    assert sorted(videos) == sorted(map(str, clips)) and source.startswith("--calibrate")
    bare = make_checkpoint(tmp_path / "old.ckpt", imgsz=96)  # made before checkpoints listed their videos
    with pytest.raises(ExportError, match="lists no training videos .* --calibrate DIR"):
        quantize.export_int8(bare, tmp_path / "never")
    assert not (tmp_path / "never").exists()  # refused before anything was exported
    with pytest.raises(ExportError, match="no video files there"):
        quantize.export_int8(ckpt, tmp_path / "never", calibrate=[str(tmp_path / "empty")])
    config = ExtractorConfig.from_record(torch.load(ckpt, weights_only=False)["hyper_parameters"]["extractor"])
    frames = quantize.sample_frames([str(clips[0]), str(tmp_path / "missing.avi")], config, count=6, progress=False)
    assert len(frames) == 1 and frames[0].shape[0] == 3 and frames[0].shape[1] % 32 == 0  # one batch per readable video, letterboxed


def test_infer_cli_says_what_goes_with_what(setting, tmp_path):
    _, ckpt, _ = setting
    for args in (["--int8"], ["--export", str(tmp_path / "x"), "--calibrate", "d"], ["--export", str(tmp_path / "x"), "--int8", "--calibration-frames", "2"]):
        r = run_script("infer.py", "-c", str(ckpt), *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().startswith("error: --")
