"""The CUDA path: fp16 extractor against fp32, the GRU step on the GPU against the CPU, live and file mode
on the GPU, ONNX Runtime's CUDA provider against PyTorch. Marked ``cuda`` and skipped without a GPU
(``benchmarks/gpu_check.sh`` runs them on one: ``pytest -m cuda``)."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch
from conftest import REAL_WEIGHTS, WEIZMANN, needs_shared, write_clip

from pipeline.data.composite import read_frames
from pipeline.data.features import KCONF, KXY, POSE_DIM, ExtractorConfig, FeatureExtractor, pool_people
from pipeline.inference.predictor import ActionPredictor
from pipeline.inference.torch_backend import load_torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

KEYPOINT_PX = 3.0  # fp16 against fp32: keypoints within this many source pixels (a 180x144 clip at imgsz 320)
POSE_ABS = 0.03  # the pose block's values (0..1) within this
POOLED_COS = 0.99  # the pooled appearance block, pooled at the same boxes: cosine similarity at least this
POOLED_COS_MEDIAN = 0.999  # end to end, at the median: where fp16 moves a box edge across a cell, the person-pooled
# mask takes a cell more or less (GPU check run 4: 0.984 at worst), so the minimum is asked of the same-box pooling


def pooled_at(extractor: FeatureExtractor, frames: np.ndarray, det) -> torch.Tensor:
    """The pooled block of ``det``'s people, pooled from this extractor's own maps at ``det``'s boxes."""
    with torch.inference_mode():
        x, r, left, top = extractor.preprocess(frames)
        maps = extractor._pass(x)[0]
        box = det.boxes * r + det.boxes.new_tensor([left, top, left, top])
        return torch.cat(pool_people([maps[i] for i in extractor.layers], det.frame, box, extractor.config.pool, x.shape[2]), 1).float()


@needs_shared
def test_fp16_extractor_matches_fp32_on_real_frames():
    frames = np.concatenate([read_frames(WEIZMANN / c / f"daria_{c}.avi", max_frames=32) for c in ("jack", "walk", "bend")])
    extractor = FeatureExtractor(ExtractorConfig(weights=str(REAL_WEIGHTS), imgsz=320, layers=(16, 19, 22)))
    full = extractor.place("cuda", half=False)(frames)  # fp32 first: the weights are halved after
    pooled32 = pooled_at(extractor, frames, full)
    half = extractor.place("cuda", half=True)(frames)
    pooled16 = pooled_at(extractor, frames, full)  # the fp16 maps at the fp32 boxes: the maps' precision alone
    assert extractor.dtype == torch.float16
    one = [i for i in range(len(frames)) if (full.frame == i).sum() == 1 and (half.frame == i).sum() == 1]
    assert len(one) >= 0.9 * len(frames), "fp16 finds other people than fp32 on most frames"
    a = torch.stack([(full.frame == i).nonzero()[0, 0] for i in one])
    b = torch.stack([(half.frame == i).nonzero()[0, 0] for i in one])
    kp_err = (full.keypoints[a, :, :2] - half.keypoints[b, :, :2]).abs()
    seen = full.keypoints[a, :, 2] > 0.5
    assert kp_err[seen].max() < KEYPOINT_PX, kp_err[seen].max()
    diff = (full.features[a, -POSE_DIM:] - half.features[b, -POSE_DIM:]).abs()
    assert diff[:, :6].max() < POSE_ABS, diff[:, :6].max()  # present, score, the box in the frame
    # where a keypoint the model is unsure of is guessed to be may move (run 2 of the GPU check: by 0.04 of the box)
    assert (diff[:, KXY] * seen.repeat_interleave(2, dim=1)).max() < POSE_ABS
    assert diff[:, KCONF].max() < 2 * POSE_ABS, diff[:, KCONF].max()
    same_box = torch.nn.functional.cosine_similarity(pooled32, pooled16, dim=1)
    assert same_box.min() > POOLED_COS, same_box.min()
    cos = torch.nn.functional.cosine_similarity(full.features[a, :-POSE_DIM], half.features[b, :-POSE_DIM], dim=1)
    assert cos.median() > POOLED_COS_MEDIAN, cos.median()
    assert half.features.dtype == torch.float32  # what reaches the GRU and the cache stays fp32


@needs_shared
def test_cuda_graph_replay_gives_the_eager_pass():
    frames = read_frames(WEIZMANN / "jack" / "daria_jack.avi", max_frames=6)
    extractor = FeatureExtractor(ExtractorConfig(weights=str(REAL_WEIGHTS), imgsz=320, layers=(16, 19, 22))).place("cuda")
    extractor.cuda_graphs = False
    eager = [extractor(f[None]) for f in frames]
    extractor.cuda_graphs = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = [extractor(f[None]) for f in frames]  # the second frame on captures, then replays
    assert not [w for w in caught if "capture failed" in str(w.message)]  # a failed capture falls back: that would pass unseen
    assert len(extractor._graphs) == 1 and extractor.cuda_graphs
    for e, g in zip(eager, graphed):
        torch.testing.assert_close(g.features, e.features, atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(g.keypoints, e.keypoints, atol=0.05, rtol=1e-3)
    extractor.place("cuda", half=False)  # new weight tensors: the graphs made for the old ones are gone
    assert not extractor._graphs


def test_decoded_batches_are_page_locked_for_the_gpu(tmp_path):
    from pipeline.data.video import VideoReader

    clip = write_clip(tmp_path / "c.avi", frames=10)
    batches = list(VideoReader(str(clip)).batches(4, pin=True))
    assert [len(i) for i, _, _ in batches] == [4, 4, 2]
    assert all(torch.from_numpy(f).is_pinned() for _, f, _ in batches)
    plain = list(VideoReader(str(clip)).batches(4))
    assert all((a[1] == b[1]).all() for a, b in zip(batches, plain))  # the same pixels either way


@needs_shared
def test_a_batch_padded_to_a_power_of_two_gives_each_frame_its_own_people():
    frames = read_frames(WEIZMANN / "jack" / "daria_jack.avi", max_frames=8)
    extractor = FeatureExtractor(ExtractorConfig(weights=str(REAL_WEIGHTS), imgsz=320, layers=(16, 19, 22))).place("cuda", half=False)
    five, eight = extractor(frames[:5]), extractor(frames)  # 5 runs padded to 8
    assert int(five.frame.max()) == 4  # nobody found in the padding
    keep = eight.frame < 5
    torch.testing.assert_close(five.features, eight.features[keep], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(five.boxes, eight.boxes[keep], atol=0.05, rtol=1e-3)


def test_batched_track_step_on_cuda_equals_cpu(tiny_checkpoint):
    cpu, gpu = load_torch(tiny_checkpoint, "cpu"), load_torch(tiny_checkpoint, "cuda", step_device="cuda")
    assert gpu.step_device.type == "cuda"
    layers, hidden = cpu.state_shape
    torch.manual_seed(0)
    x = torch.randn(20, 7, cpu.extractor.feature_dim)  # 20 frames, 7 tracks in one batch
    hc, hg = torch.zeros(layers, 7, hidden), torch.zeros(layers, 7, hidden, device="cuda")
    # cuDNN's GRU and cuBLAS may use TF32 (10-bit mantissa) by default: this checks the batching and the
    # carried states, so in full fp32 (test_predictor_on_cuda_gives_the_cpus_labels runs with the defaults)
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False), _no_tf32_matmul():
        for t in range(len(x)):
            pc, (hc,) = cpu.step(x[t], [hc])
            pg, (hg,) = gpu.step(x[t].cuda(), [hg])
            torch.testing.assert_close(pg.cpu(), pc, atol=1e-4, rtol=1e-3)
            torch.testing.assert_close(hg.cpu(), hc, atol=1e-4, rtol=1e-3)


@contextlib.contextmanager
def _no_tf32_matmul():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def test_predictor_on_cuda_gives_the_cpus_labels(tiny_checkpoint, tmp_path):
    frames = read_frames(write_clip(tmp_path / "c.avi", frames=24))
    out = {}
    for device in ("cpu", "cuda"):
        p = ActionPredictor(tiny_checkpoint, device=device, half=False)
        out[device] = p(frames)
    c, g = out["cpu"], out["cuda"]
    assert len(c.track) == len(g.track) > 0
    np.testing.assert_array_equal(c.track, g.track)
    np.testing.assert_allclose(g.probs, c.probs, atol=2e-2)  # TF32 convolutions on the GPU: close, not bit-equal
    assert (g.probs.argmax(1) == c.probs.argmax(1)).mean() > 0.9


def test_the_step_on_the_host_beside_a_gpu_extractor_gives_the_same_labels(tiny_checkpoint, tmp_path):
    """``step_device='cpu'``: the features come to the host in the batch's one copy (the GPU check measures it)."""
    frames = read_frames(write_clip(tmp_path / "c.avi", frames=24))
    on_gpu = ActionPredictor(tiny_checkpoint, device="cuda", half=False)(frames)
    host = ActionPredictor(tiny_checkpoint, device="cuda", half=False, step_device="cpu")
    assert host._move_features and host.step_device.type == "cpu"
    on_host = host(frames)
    np.testing.assert_array_equal(on_host.track, on_gpu.track)
    np.testing.assert_allclose(on_host.keypoints, on_gpu.keypoints, atol=1e-3)
    np.testing.assert_allclose(on_host.probs, on_gpu.probs, atol=1e-3)


def test_live_loop_runs_with_the_model_on_cuda(tiny_checkpoint, tmp_path):
    from pipeline.live.capture import LatestFrameCapture
    from pipeline.live.loop import LiveOptions, run_live

    clip = write_clip(tmp_path / "cam.avi", frames=50, fps=25.0)
    predictor = ActionPredictor(tiny_checkpoint, device="cuda")
    assert predictor.device.type == "cuda" and predictor.extractor.dtype == torch.float16
    stats = run_live(predictor, LatestFrameCapture(str(clip), realtime=True), LiveOptions(show=False)).summary()
    assert stats["processed_frames"] >= 10, stats


def test_file_mode_workers_on_cuda_give_one_process_results(tiny_checkpoint, tmp_path):
    from pipeline.inference.files import analyse_many
    from pipeline.inference.workers import PredictorSpec, analyse_parallel

    clips = [str(write_clip(tmp_path / f"v{i}.avi", frames=20 + 3 * i, seed=i)) for i in range(4)]
    one, _ = analyse_many(clips, ActionPredictor(tiny_checkpoint, device="cuda"), None, None, progress=False, batch_size=64)
    many, failed = analyse_parallel(clips, PredictorSpec(str(tiny_checkpoint), "cuda"), 2, None, None, progress=False, batch_size=64)
    assert not failed
    assert [(r.source, r.label, r.processed_frames) for r in many] == [(r.source, r.label, r.processed_frames) for r in one]
    for a, b in zip(one, many):
        assert abs(a.score - b.score) < 1e-4


def test_onnxruntime_cuda_provider_gives_torch_labels(tiny_checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA provider ({', '.join(ort.get_available_providers())})")
    from pipeline.inference.export import export
    from pipeline.inference.runtime import load_exported

    export(tiny_checkpoint, tmp_path / "exp")
    parts = load_exported(tmp_path / "exp", "onnxruntime", device="cuda")
    assert parts.extractor.graph.session.get_providers()[0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    frames = read_frames(write_clip(tmp_path / "c.avi", frames=16))
    exported = ActionPredictor(tmp_path / "exp", device="cuda", backend="onnxruntime")(frames)
    torch_ = ActionPredictor(tiny_checkpoint, device="cuda", half=False)(frames)
    np.testing.assert_array_equal(exported.track, torch_.track)
    assert (exported.probs.argmax(1) == torch_.probs.argmax(1)).all()
