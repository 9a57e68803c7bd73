"""Feature extraction speed: this pipeline's extractor vs the plain Ultralytics way.

    python benchmarks/extraction_speed.py [--clips 10] [--imgsz 320] [--device cpu|cuda]

Both sides decode the same Weizmann clips and produce per frame the people's pose and pooled features of
layers 16, 19, 22 (ours also tracks every person, as the cache needs). The plain way is what a user would write: per frame,
``model.predict(frame)`` for the pose and ``model.embed(frame)`` for the features (two forward passes,
Ultralytics' per-image pre- and post-processing). Ours: one batched pass, letterboxing on the device,
decoding in a background thread. Prints frames per second of both and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline.data.extract import extract_video  # noqa: E402
from pipeline.data.features import ExtractorConfig, FeatureExtractor  # noqa: E402
from pipeline.data.video import VideoReader  # noqa: E402
from pipeline.data.videoset import DatasetDefinition, list_videos  # noqa: E402
from pipeline.data.weights import resolve_weights  # noqa: E402

LAYERS = [16, 19, 22]


def plain_ultralytics(model, clips: list[Path], imgsz: int, device: str) -> int:
    fp16 = {"half": True} if device == "cuda" else {}  # passing half=False makes Ultralytics warn per call
    n = 0
    for clip in clips:
        for _, frame in VideoReader(clip):
            r = model.predict(frame, imgsz=imgsz, device=device, verbose=False, **fp16)[0]
            _ = r.keypoints.data[:1].cpu(), r.boxes.xyxy[:1].cpu()
            _ = torch.cat(model.embed(frame, imgsz=imgsz, embed=LAYERS, device=device, verbose=False, **fp16)).cpu()
            n += 1
    return n


def ours(extractor: FeatureExtractor, clips: list[Path], batch: int) -> int:
    return sum(len(extract_video(extractor, clip, batch).frame_index) for clip in clips)


def timed(fn, *args, threads: int) -> tuple[int, float]:
    torch.set_num_threads(threads)  # Ultralytics' first CPU predict sets cpu_count - 1 threads for the process
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    n = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="yolo11n-pose.pt")
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "weizmann"))
    p.add_argument("--clips", type=int, default=10, help="how many clips (one per class first)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for both sides")
    a = p.parse_args(argv)
    from ultralytics import YOLO

    videos, _ = list_videos(DatasetDefinition.load("weizmann"), Path(a.root))
    by_actor = sorted(videos, key=lambda v: (v.group, v.label))  # daria's 10 classes first
    clips = [v.path for v in by_actor[: a.clips]]
    extractor = FeatureExtractor(ExtractorConfig(weights=a.weights, imgsz=a.imgsz, layers=tuple(LAYERS))).place(a.device)

    yolo = YOLO(str(resolve_weights(a.weights)))  # as the pipeline finds it (ACTIONS_WEIGHTS_DIR...)
    # warm up both paths (first-call allocations, cuDNN autotuning, Ultralytics' predictor set-up) on one clip
    ours(extractor, clips[:1], a.batch)
    plain_ultralytics(yolo, clips[:1], a.imgsz, a.device)

    n_ours, t_ours = timed(ours, extractor, clips, a.batch, threads=a.threads)
    n_plain, t_plain = timed(plain_ultralytics, yolo, clips, a.imgsz, a.device, threads=a.threads)
    assert n_ours == n_plain, (n_ours, n_plain)
    fps_ours, fps_plain = n_ours / t_ours, n_plain / t_plain
    print(f"device {a.device} ({a.threads} CPU threads)" + (f", {torch.cuda.get_device_name()}" if a.device == "cuda" else ""))
    print(f"{len(clips)} clips, {n_ours} frames at imgsz {a.imgsz}")
    print(f"plain Ultralytics (predict + embed per frame): {fps_plain:8.1f} frames/s")
    print(f"this extractor (one batched pass, batch {a.batch}):   {fps_ours:8.1f} frames/s")
    print(f"speed-up: {fps_ours / fps_plain:.2f}x")
    return {"fps_ours": fps_ours, "fps_plain": fps_plain, "ratio": fps_ours / fps_plain, "frames": n_ours}


if __name__ == "__main__":
    main()
