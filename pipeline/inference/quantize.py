"""fp32 extractor graph -> INT8: post-training static quantization, calibrated on the user's own frames.

The pose model's convolutions are nearly all of a frame's cost on a CPU; in 8-bit integers they run about
twice as fast where the CPU has VNNI or AMX. ONNX Runtime's quantization tooling (``onnxruntime.quantization``,
no further package) measures each tensor's range on a few hundred frames of the user's footage (by default
the checkpoint's own training videos, which ``train.py`` lists in it) and writes QDQ graphs:

* ``extractor_int8.onnx`` for ONNX Runtime: every operator it can run in INT8 quantized (its fastest form);
* ``extractor_int8.xml``/``.bin`` for OpenVINO: only the convolutions' inputs quantized (its fastest form;
  OpenVINO fuses the rest itself), from the same calibration.

The box and keypoint branches (a few patches per frame) and the recurrent step stay in fp32. Before the
graphs are kept, both extractors run on frames of held-out videos (not used to calibrate) and the INT8 one
must find the same people with nearly the same features (:data:`LIMITS`); otherwise quantization is refused.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.data.features import ExtractorConfig, letterbox
from pipeline.data.video import VideoError, expand_sources, open_capture, probe
from pipeline.inference.export import ExportError, export, runtime_module
from pipeline.model.checkpoint import read_checkpoint

FRAMES = 300  # calibration frames by default: ranges settle after a few hundred
CHECK_SHARE = 0.2  # of the sampled videos, held out of calibration to check the INT8 graph against fp32
# what the INT8 extractor must keep on held-out frames (measured: see README "Export and faster runtimes")
# (keypoint error as a share of the person's height, so that it means the same on any frame size)
LIMITS = {"people_found": 0.8, "feature_cosine_p10": 0.85, "keypoint_share_median": 0.03}


class QuantizationError(ExportError):
    """No calibration frames, a quantizer that fails, or an INT8 graph that loses too much."""


def export_int8(
    checkpoint: str | Path, folder: str | Path, weights: str | None = None, calibrate: list[str] | None = None,
    frames: int = FRAMES, progress: bool = True,
) -> dict:  # fmt: skip
    """``export`` with an INT8 extractor beside the fp32 one, calibrated on ``calibrate`` (videos, folders,
    lists) or the checkpoint's training videos; the manifest. When quantization fails or loses too much, the
    fp32 export is still written and ExportError says so."""
    videos, source = calibration_videos(checkpoint, calibrate)  # said before anything is exported for nothing

    def add(tmp: Path, manifest: dict) -> None:
        manifest["int8"] = quantize(tmp, manifest, videos, source, frames, progress)
        manifest["precision"] = "int8"
        manifest["graphs"].append("extractor_int8")

    return export(checkpoint, folder, weights, extra=add)


def calibration_videos(checkpoint: str | Path, calibrate: list[str] | None) -> tuple[list[str], str]:
    """The videos to calibrate on and where they came from: ``calibrate`` (files, folders, lists) when
    given, else the training videos the checkpoint lists that are still on this machine."""
    if calibrate:
        videos = [v for v in expand_sources(calibrate) if Path(v).is_file()]
        if not videos:
            raise QuantizationError(f"--calibrate {' '.join(calibrate)}: no video files there")
        return videos, "--calibrate " + " ".join(calibrate)
    if Path(checkpoint).is_dir():
        raise QuantizationError(f"{checkpoint} is an exported folder: quantize from the checkpoint (-c best.ckpt)")
    listed = read_checkpoint(checkpoint).get("train_videos") or []  # a missing or foreign file: its one-line error
    videos = [v for v in listed if Path(v).is_file()]
    if not videos:
        why = "lists no training videos (trained before they were recorded)" if not listed else f"lists {len(listed)} training videos, none of them here"
        raise QuantizationError(f"{checkpoint} {why}: give frames to calibrate on with --calibrate DIR (a few dozen clips like the ones to label)")
    return videos, f"the checkpoint's {len(videos)} training videos"


def sample_frames(videos: list[str], config: ExtractorConfig, count: int = FRAMES, progress: bool = True) -> list[np.ndarray]:
    """About ``count`` frames spread evenly over ``videos`` (and over each video), letterboxed as inference
    letterboxes them: one batch per video (its own input size). Unreadable videos are skipped."""
    step = max(len(videos) / count, 1.0)  # more videos than frames: one frame each from an even subset
    chosen = [videos[int(i * step)] for i in range(min(len(videos), count))]
    per_video = math.ceil(count / len(chosen))
    batches = []
    for v in tqdm(chosen, desc="Calibration frames", unit="video", disable=not progress, leave=False):
        try:
            frames = _frames_at(v, per_video)
        except (VideoError, OSError, ValueError):
            continue
        if frames:
            h, w = frames[0].shape[:2]
            batches.append(letterbox(np.stack(frames), config.input_size(h, w))[0].numpy())
    return batches


def _frames_at(path: str, k: int) -> list[np.ndarray]:
    """``k`` frames evenly spaced over the video (decoding stops after the last)."""
    cap = open_capture(path)
    try:
        total = probe(cap, path).frame_count or 1
        wanted = {int((j + 0.5) * total / k) for j in range(k)}
        frames, index, last = [], 0, max(wanted)
        while index <= last and cap.grab():
            if index in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    frames.append(frame)
            index += 1
        return frames
    finally:
        cap.release()


def quantize(folder: Path, manifest: dict, videos: list[str], source: str, count: int = FRAMES, progress: bool = True) -> dict:
    """Write the INT8 extractor graphs into ``folder`` (an export in progress, fp32 graphs in place) and
    return the manifest's ``int8`` record; on any failure nothing of them is left and QuantizationError says why."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        raise QuantizationError('INT8 export needs onnxruntime: pip install -e ".[onnx]"') from None
    t0 = time.perf_counter()
    config = ExtractorConfig.from_record(manifest["extractor"])
    check_videos = videos[:: round(1 / CHECK_SHARE)] if len(videos) >= 2 else []
    calib_videos = [v for v in videos if v not in set(check_videos)] or videos
    batches = sample_frames(calib_videos, config, count, progress)
    checks = sample_frames(check_videos or videos, config, max(count // 4, 16), progress)
    n = sum(len(b) for b in batches)
    if n == 0:
        raise QuantizationError(f"no frame could be read from {source} to calibrate on")
    made = [folder / "extractor_int8.onnx", folder / "extractor_int8.xml", folder / "extractor_int8.bin"]
    cache, conv_only = folder / ".calibration.json", folder / ".extractor_int8_conv.onnx"

    class Reader(CalibrationDataReader):
        """The letterboxed batches, one ``get_next`` each, counted on the progress bar."""

        def __init__(self, bar: tqdm):
            self.batches, self.bar = iter(batches), bar

        def get_next(self) -> dict | None:
            x = next(self.batches, None)
            if x is not None:
                self.bar.update(len(x))
            return None if x is None else {"frames": x}

    options = dict(
        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache,
    )  # fmt: skip
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's advice to pre-process, on the root logger: not the user's to act on
    try:
        with tqdm(total=n, desc="Calibrating", unit="frame", disable=not progress, leave=False) as bar:
            quantize_static(folder / "extractor.onnx", made[0], Reader(bar), **options)
        try:
            ov = runtime_module("openvino")
        except ExportError:
            ov = None
        if ov is not None:  # the cached ranges again, the convolutions' inputs only: OpenVINO's fastest form
            quantize_static(folder / "extractor.onnx", conv_only, None, op_types_to_quantize=["Conv"], **options)
            ov.save_model(ov.Core().read_model(conv_only), made[1], compress_to_fp16=False)
        check = compare(folder, manifest, checks)
    except QuantizationError:
        _remove(made)
        raise
    except Exception as e:  # noqa: BLE001 - the quantizer's and runtimes' own errors: one line, fp32 kept
        _remove(made)
        raise QuantizationError(f"INT8 quantization failed ({(str(e).strip().splitlines() or [type(e).__name__])[-1][:200]})") from None
    finally:
        logging.getLogger().setLevel(quiet)
        _remove([cache, conv_only])
    lost = {k: v for k, v in check.items() if k in LIMITS and (v > LIMITS[k] if k.startswith("keypoint") else v < LIMITS[k])}
    if lost:
        _remove(made)
        said = ", ".join(f"{k} {v:.3f} (limit {LIMITS[k]})" for k, v in lost.items())
        raise QuantizationError(f"the INT8 extractor loses too much on held-out frames: {said}; calibrate on more or other clips (--calibrate DIR)")
    return {
        "graph": "extractor_int8",
        "quantizer": "onnxruntime.quantization (QDQ, per-channel int8 weights, uint8 activations, min-max ranges)",
        "openvino": "convolution inputs only" if ov is not None else None,
        "calibration": {"source": source, "videos": len(batches), "frames": n, "drawn_from": calib_videos},
        "check": {
            "videos": len(checks), "frames": sum(len(b) for b in checks), **{k: round(v, 4) for k, v in check.items()}, "limits": LIMITS,
            "drawn_from": check_videos or videos,
        },  # fmt: skip
        "seconds": round(time.perf_counter() - t0, 1),
    }


def compare(folder: Path, manifest: dict, batches: list[np.ndarray]) -> dict:
    """fp32 against INT8 extractor (ONNX Runtime) on letterboxed ``batches``: the share of the fp32 people
    the INT8 one finds (box IoU >= 0.5), the cosine of their features as the classifier sees them
    (normalised by the checkpoint's mean and std; median and 10th percentile) and their keypoints' error in
    source pixels (keypoints both call visible; median and 95th percentile) and as a share of the person's height."""
    from pipeline.inference.runtime import ExportedExtractor

    threads = torch.get_num_threads()
    fp32 = ExportedExtractor(folder, manifest, "onnxruntime", threads)
    int8 = ExportedExtractor(folder, manifest, "onnxruntime", threads, graph="extractor_int8")
    mean, std = (torch.tensor(manifest["normalisation"][k]) for k in ("mean", "std"))
    found = people = 0
    cosines, errors, shares = [], [], []
    for x in batches:
        a, b = fp32(x), int8(x)
        people += len(a.frame)
        for i in range(len(a.frame)):
            same = (b.frame == a.frame[i]).nonzero()[:, 0]
            if len(same) == 0:
                continue
            iou = _iou(a.boxes[i], b.boxes[same])
            j = int(same[iou.argmax()])
            if iou.max() < 0.5:
                continue
            found += 1
            za, zb = (a.features[i] - mean) / std, (b.features[j] - mean) / std
            cosines.append(float(torch.nn.functional.cosine_similarity(za, zb, dim=0)))
            seen = (a.keypoints[i, :, 2] > 0.5) & (b.keypoints[j, :, 2] > 0.5)
            error = (a.keypoints[i, seen, :2] - b.keypoints[j, seen, :2]).norm(dim=1)
            errors += error.tolist()
            shares += (error / (a.boxes[i, 3] - a.boxes[i, 1]).clamp(min=1)).tolist()
    if people == 0:
        raise QuantizationError("nobody in the held-out frames to check the INT8 extractor on: calibrate on clips with people in view (--calibrate DIR)")
    cos = np.array(cosines or [0.0])
    err, share = np.array(errors or [0.0]), np.array(shares or [0.0])
    return {
        "people": people, "people_found": found / people,
        "feature_cosine_median": float(np.median(cos)), "feature_cosine_p10": float(np.percentile(cos, 10)),
        "keypoint_px_median": float(np.median(err)), "keypoint_px_p95": float(np.percentile(err, 95)),
        "keypoint_share_median": float(np.median(share)),
    }  # fmt: skip


def _iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(box[:2], boxes[:, :2]), torch.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter).clamp(min=1e-9)


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
