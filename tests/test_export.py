"""Export: the graphs of both stages reproduce PyTorch's per-frame probabilities, labels and tracks."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import CROWD, graphs_from, make_checkpoint, seeing_weights, write_clip

from pipeline.data.video import VideoReader
from pipeline.inference.export import ExportError, cached_export, export, read_manifest
from pipeline.inference.predictor import ActionPredictor
from pipeline.model.classifier import ActionClassifier
from pipeline.model.novelty import Novelty, PrototypeRule

RUNTIMES = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module", params=["gru", "lstm"])
def exported(request, crowd_export, tmp_path_factory):
    """A crowd-seeing random extractor with pooled layers and an untrained classifier (a frame probe fused
    in), exported: the extractor's graphs are the session's (``crowd_export``, traced from the same weights),
    the step, where the cells and heads differ, is traced here."""
    tmp = tmp_path_factory.mktemp(f"export_{request.param}")
    weights = str(seeing_weights(tmp / "crowd.pt", bias=11))
    g = torch.Generator().manual_seed(1)
    # the LSTM's cell also reads the pose's change (velocity), whose means ride in its state
    kw = dict(cell=request.param, rejection={"threshold": 0.4}, weights=weights, probe_share=0.5, velocity=request.param == "lstm", **CROWD)
    dim = torch.load(make_checkpoint(tmp / "plain.ckpt", **kw), weights_only=False)["hyper_parameters"]["input_dim"]
    hidden = ActionClassifier(dim, ["a", "b"], {}, velocity=kw["velocity"]).model.state_shape[1]  # the GRU's, the summary's, the velocity's
    protos = PrototypeRule(0.3 * torch.randn(2, hidden, generator=g), torch.eye(hidden), 1.0, 8, 0.05)  # around the limit
    ckpt = make_checkpoint(tmp / "c.ckpt", novelty=Novelty(prototypes=protos), **kw)
    # a new folder's parents are made (gru), an old export in the way is replaced whole (lstm)
    folder = tmp / "new" / "exported"
    with pytest.MonkeyPatch.context() as monkeypatch:
        if request.param == "lstm":
            folder.mkdir(parents=True)
            (folder / "export.json").write_text("{}")
            (folder / "old.onnx").write_text("stale")
        graphs_from(crowd_export[1], monkeypatch, keep=("step.onnx",))
        export(ckpt, folder)
    assert read_manifest(folder)["class_names"] == ["walk", "wave"] and not (folder / "old.onnx").exists()
    return ckpt, folder


def run(predictor: ActionPredictor, frames: np.ndarray, batch: int) -> list[np.ndarray]:
    """Every person row of the video: frame number, track, probabilities, box."""
    predictor.reset()
    out = [(i, predictor(frames[i : i + batch])) for i in range(0, len(frames), batch)]
    return [np.concatenate([p.frame + i for i, p in out])] + [np.concatenate([getattr(p, k) for _, p in out]) for k in ("track", "probs", "boxes", "novelty")]


@pytest.mark.parametrize("backend", RUNTIMES)
def test_exported_graphs_give_pytorchs_probabilities_labels_and_tracks(exported, backend, tmp_path):
    ckpt, folder = exported
    frames = np.stack([f for _, f in VideoReader(write_clip(tmp_path / "a.avi", frames=24, size=(120, 96)))])
    want = run(ActionPredictor(ckpt, device="cpu", backend="torch"), frames, 8)
    assert len(want[0]) >= 2 * len(frames) and len(set(want[1])) >= 2  # a crowd: the comparison is not trivial
    for batch in (8, 1):  # file mode's batches and live's single frames
        got = run(ActionPredictor(folder, device="cpu", backend=backend), frames, batch)
        np.testing.assert_array_equal(got[0], want[0])  # the same people in the same frames...
        np.testing.assert_array_equal(got[1], want[1])  # ...followed as the same tracks
        assert np.abs(got[2] - want[2]).max() < 1e-3
        np.testing.assert_array_equal(got[2].argmax(1), want[2].argmax(1))
        assert np.abs(got[3] - want[3]).max() < 0.1  # boxes, source pixels
        np.testing.assert_allclose(got[4], want[4], rtol=1e-2, atol=1e-3)  # the novelty rules run on every backend
        assert (want[4] > 0).any()


@pytest.mark.parametrize("exported", ["gru"], indirect=True)  # the extractor's graph does not depend on the cell
def test_openvino_pads_short_batches_instead_of_compiling_each_length(exported, tmp_path):
    """A video's last batch is short and every video's is another length: OpenVINO runs it padded to a power of
    two (a few compilations, not one per length), and the padding's outputs are gone."""
    _, folder = exported
    frames = np.stack([f for _, f in VideoReader(write_clip(tmp_path / "a.avi", frames=7, size=(120, 96)))])
    ov = ActionPredictor(folder, device="cpu", backend="openvino").extractor
    ort = ActionPredictor(folder, device="cpu", backend="onnxruntime").extractor  # no padding: the reference
    for n in (3, 4, 5, 7):
        got, want = ov(frames[:n]), ort(frames[:n])
        assert set(got.frame.tolist()) == set(range(n))  # people in every frame, none from the padding
        np.testing.assert_array_equal(got.frame.numpy(), want.frame.numpy())
        assert (got.boxes - want.boxes).abs().max() < 0.1 and (got.features - want.features).abs().max() < 1e-3
    assert sorted(key[0][0] for key in ov.graph.compiled) == [4, 8]


def test_the_folder_carries_what_inference_needs_and_runs_without_the_weights(exported, tmp_path):
    ckpt, folder = exported
    moved = shutil.copytree(folder, tmp_path / "deployed")
    (ckpt.parent / "crowd.pt").rename(tmp_path / "away.pt")  # neither the checkpoint nor the .pt is read
    try:
        m = read_manifest(moved)
        assert m["class_names"] == ["walk", "wave"] and m["rejection"] == {"threshold": 0.4}
        assert len(m["normalisation"]["mean"]) == m["extractor"]["feature_dim"] and m["extractor"]["weights_sha256"]
        assert {"extractor", "step"} <= set(m["graphs"]) and all((moved / f"{g}.xml").is_file() for g in m["graphs"])
        assert m["built_with"]["opset"] == 18 and m["built_with"]["exporter"] == "torch.onnx (dynamo)" and m["built_with"]["torch"] and m["built_with"]["onnx"]  # what wrote it
        # OpenVINO's conversion tools are never imported: they send telemetry from a forked process, which
        # can hang the exit of an offline process with PyTorch's threads
        assert "openvino" in sys.modules and "openvino_telemetry" not in sys.modules
        p = ActionPredictor(moved, device="cpu")
        assert p.class_names == ["walk", "wave"] and p.rejection_threshold == 0.4 and not p.can_inspect
        assert m["novelty"] == "novelty.pt" and p.novelty.prototypes is not None and p.novelty.motion is None
        assert len(p(np.zeros((2, 96, 120, 3), np.uint8))) == 2
    finally:
        (tmp_path / "away.pt").rename(ckpt.parent / "crowd.pt")


def test_a_checkpoint_is_exported_beside_it_once(tiny_checkpoint, tiny_export, tmp_path, monkeypatch):
    # tiny_export is cached_export(tiny_checkpoint): made on first use, beside the checkpoint
    assert tiny_export == tiny_checkpoint.with_suffix(".export") and read_manifest(tiny_export)["checkpoint"] == "tiny.ckpt"
    stamp = (tiny_export / "export.json").stat().st_mtime_ns
    assert cached_export(tiny_checkpoint) == tiny_export and (tiny_export / "export.json").stat().st_mtime_ns == stamp  # reused
    ckpt = shutil.copy(tiny_checkpoint, tmp_path / "best.ckpt")
    shutil.copytree(tiny_export, tmp_path / "best.export")
    made = []
    monkeypatch.setattr("pipeline.inference.export.export", lambda *a: made.append(a))  # what export() writes: tests above
    assert cached_export(ckpt) == tmp_path / "best.export" and made == []  # the same checkpoint's export, moved: reused
    make_checkpoint(tmp_path / "best.ckpt", seed=1)  # retrained: exported again
    assert cached_export(ckpt) == tmp_path / "best.export" and made == [(tmp_path / "best.ckpt", tmp_path / "best.export", None)]


def test_bad_folders_and_missing_runtimes_are_one_line_errors(exported, tmp_path, monkeypatch):
    ckpt, folder = exported
    with pytest.raises(ExportError, match="-c takes a checkpoint file written by train.py or a folder written by 'infer.py --export', and this is neither"):
        ActionPredictor(tmp_path, device="cpu")
    with pytest.raises(ExportError, match="without PyTorch weights"):
        ActionPredictor(folder, device="cpu", backend="torch")
    broken = shutil.copytree(folder, tmp_path / "broken")
    (broken / "step.onnx").unlink()
    with pytest.raises(ExportError, match="step.onnx missing"):
        ActionPredictor(broken, device="cpu")
    (broken / "export.json").write_text(json.dumps({**read_manifest(folder), "export_version": 99}))
    with pytest.raises(ExportError, match="another version"):
        ActionPredictor(broken, device="cpu")
    damaged = shutil.copytree(folder, tmp_path / "damaged")
    for name in ("extractor.onnx", "extractor.bin"):
        (damaged / name).write_bytes((folder / name).read_bytes()[:1000])  # a copy cut short
    for backend in RUNTIMES:
        with pytest.raises(ExportError, match=f"{backend} cannot read it .*export the checkpoint again"):
            ActionPredictor(damaged, device="cpu", backend=backend)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(ExportError, match=r'pip install -e "\.\[openvino\]"'):
        ActionPredictor(folder, device="cpu", backend="openvino")


@pytest.mark.parametrize("exported", ["gru"], indirect=True)  # the folder rules do not depend on the cell
def test_export_never_overwrites_what_is_not_an_export(exported, tmp_path):
    ckpt, _ = exported
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "mine", tmp_path / "file"):
        with pytest.raises(ExportError, match="is not an exported folder"):
            export(ckpt, target)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a new folder with its parents made, an old export replaced: the fixture's exports


def test_onnxruntime_takes_the_gpu_providers_only_where_it_has_them():
    ort = pytest.importorskip("onnxruntime")
    from pipeline.inference.runtime import CPU, gpu_providers

    assert gpu_providers("cpu") == CPU
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert gpu_providers("cuda")[-1] == "CPUExecutionProvider" and "CUDAExecutionProvider" in gpu_providers("cuda")
    else:  # a CPU build: auto stays on the CPU, an explicit GPU is a one-line error that says what to install
        assert gpu_providers("auto") == CPU
        with pytest.raises(ExportError, match="no CUDA provider.*onnxruntime-gpu"):
            gpu_providers("cuda")
