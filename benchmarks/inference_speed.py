"""Cost of a label per frame: infer.py's file mode vs a plain per-frame loop vs a 3D-CNN sliding window.

    python benchmarks/inference_speed.py [--checkpoint best.ckpt] [--clips 5] [--device cpu|cuda]

All on the same Weizmann clips, one label per frame:
* file mode: ``pipeline.inference.files.analyse_video`` as ``infer.py`` runs it (decode thread, batched
  extractor forward, GRU with carried state), without and with the annotated video + JSON written;
* plain loop, what a user would write: per frame ``model.predict`` (pose) and ``model.embed`` (features),
  then the GRU over the whole prefix so far (no carried state);
* 3D CNN: torchvision ``r3d_18`` (random init), a 16-frame 112x112 window ending at each output frame.
Speed does not depend on trained weights: without ``--checkpoint`` an untrained classifier with the
extractor of ``--config`` (default ``configs/weizmann.yaml``) is used. On CUDA, also per-frame streaming latency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from pipeline.data.features import POSE_DIM, ExtractorConfig, FeatureExtractor  # noqa: E402
from pipeline.data.video import VideoReader  # noqa: E402
from pipeline.data.videoset import DatasetDefinition, list_videos  # noqa: E402
from pipeline.data.weights import resolve_weights  # noqa: E402
from pipeline.inference.files import OutputPaths, analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def untrained_checkpoint(path: Path, weights: str, config: str = "configs/weizmann.yaml", imgsz: int | None = None) -> Path:
    from pipeline.data.extract import extractor_record
    from pipeline.model.classifier import ActionClassifier

    cfg = yaml.safe_load((ROOT / config).read_text())["data"]["extractor"]
    record = extractor_record(FeatureExtractor(ExtractorConfig.from_dict({**cfg, "weights": weights, "imgsz": imgsz or cfg["imgsz"]})))
    names = DatasetDefinition.load("weizmann").classes
    clf = ActionClassifier(record["feature_dim"], names, record)
    torch.save({"hyper_parameters": dict(clf.hparams), "state_dict": clf.state_dict()}, path)
    return path


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def file_mode(predictor: ActionPredictor, clips: list[Path], outputs: bool) -> int:
    n = 0
    with tempfile.TemporaryDirectory() as d:
        for c in clips:
            paths = OutputPaths(video=Path(d) / f"{c.stem}.mp4", json=Path(d) / f"{c.stem}.json") if outputs else None
            n += analyse_video(str(c), predictor, paths, progress=False).processed_frames
    return n


def pose_vector(result, width: int, height: int) -> np.ndarray:
    """The pose block of the feature vector, from an Ultralytics ``Results`` (main person = top score)."""
    v = np.zeros(POSE_DIM, np.float32)
    if len(result.boxes):
        i = int(result.boxes.conf.argmax())
        x0, y0, x1, y1 = result.boxes.xyxy[i].tolist()
        k = result.keypoints.data[i].cpu().numpy()
        w, h = max(x1 - x0, 1), max(y1 - y0, 1)
        xy = (k[:, :2] - [x0, y0]) / [w, h]
        v[:6] = [1, float(result.boxes.conf[i]), (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
        v[6:] = np.concatenate([xy.ravel(), k[:, 2]])
    return v


@torch.inference_mode()
def plain_loop(yolo, predictor: ActionPredictor, clips: list[Path], device: torch.device, embed: bool) -> int:
    """Per frame: predict (+ embed), append the vector, run the GRU over the whole prefix."""
    cfg, fp16 = predictor.config, ({"half": True} if device.type == "cuda" else {})  # half=False warns per call
    layers = list(cfg.layers) or [22]
    n = 0
    for clip in clips:
        seq = []
        for _, frame in VideoReader(clip, fps=cfg.fps):
            r = yolo.predict(frame, imgsz=cfg.imgsz, device=device, verbose=False, **fp16)[0]
            pose = pose_vector(r, frame.shape[1], frame.shape[0])
            parts = [torch.cat(yolo.embed(frame, imgsz=cfg.imgsz, embed=layers, device=device, verbose=False, **fp16)).float().cpu()] if embed else []
            if not parts:  # predict only: the pooled block (when the checkpoint has one) left as zeros
                parts = [torch.zeros(predictor.extractor.feature_dim - POSE_DIM)]
            x = torch.cat([*parts, torch.from_numpy(pose)])[-predictor.extractor.feature_dim :]
            seq.append(x.to(device))
            logits, _ = predictor.model(torch.stack(seq)[None])
            _ = logits[0, -1].softmax(-1).cpu()
            n += 1
    return n


@torch.inference_mode()
def r3d_windows(clips: list[Path], device: torch.device, max_windows: int) -> int:
    """One 16x112x112 r3d_18 window per output frame (random init: the cost, not the accuracy)."""
    from torchvision.models.video import r3d_18

    net = r3d_18().eval().to(device)
    mean = torch.tensor([0.43216, 0.394666, 0.37645], device=device)[:, None, None, None]
    std = torch.tensor([0.22803, 0.22145, 0.216989], device=device)[:, None, None, None]
    n = 0
    for clip in clips:
        buf: list[np.ndarray] = []
        for _, frame in VideoReader(clip):
            buf = (buf + [cv2.resize(frame, (112, 112))[:, :, ::-1]])[-16:]
            window = np.stack(buf + [buf[-1]] * (16 - len(buf)))  # pad the first frames by repetition
            x = torch.from_numpy(window).to(device).permute(3, 0, 1, 2).float().div(255)
            _ = net(((x - mean) / std)[None]).softmax(-1).cpu()
            n += 1
            if n >= max_windows:
                return n
    return n


def timed(fn, *args, device: torch.device, threads: int) -> tuple[int, float]:
    torch.set_num_threads(threads)  # Ultralytics' first CPU predict sets cpu_count - 1 threads for the process
    sync(device)
    t = time.perf_counter()
    n = fn(*args)
    sync(device)
    return n, time.perf_counter() - t


@torch.inference_mode()
def streaming_latency(predictor: ActionPredictor, clip: Path, device: torch.device) -> np.ndarray:
    """Per-frame latency of one extractor forward + one GRU step, frames one at a time (live mode)."""
    frames = [f for _, f in VideoReader(clip, fps=predictor.fps)]
    predictor.reset()
    out = []
    for f in frames:
        sync(device)
        t = time.perf_counter()
        predictor(f[None])
        sync(device)
        out.append(time.perf_counter() - t)
    return np.array(out[5:]) * 1000


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a train.py checkpoint (default: an untrained one, default config)")
    p.add_argument("--weights", default="yolo11n-pose.pt")
    p.add_argument("--config", default="configs/weizmann.yaml", help="whose extractor settings an untrained checkpoint takes")
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "weizmann"))
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--r3d-windows", type=int, default=60, help="windows to time for the 3D CNN (it is slow on a CPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args(argv)
    device = torch.device(a.device)
    from ultralytics import YOLO

    videos, _ = list_videos(DatasetDefinition.load("weizmann"), Path(a.root))
    clips = [v.path for v in sorted(videos, key=lambda v: (v.group, v.label))[: a.clips]]
    with tempfile.TemporaryDirectory() as d:
        ckpt = a.checkpoint or untrained_checkpoint(Path(d) / "untrained.ckpt", a.weights, a.config)
        predictor = ActionPredictor(ckpt, device=a.device)
    yolo = YOLO(str(resolve_weights(predictor.config.weights)))  # as the pipeline finds it (ACTIONS_WEIGHTS_DIR...)

    # warm-up of every path on one clip (allocations, Ultralytics' predictor set-up, cuDNN autotuning)
    file_mode(predictor, clips[:1], False)
    plain_loop(yolo, predictor, clips[:1], device, embed=True)
    r3d_windows(clips[:1], device, 3)

    rows = {}
    rows["infer.py file mode"] = timed(file_mode, predictor, clips, False, device=device, threads=a.threads)
    rows["infer.py file mode + video + JSON"] = timed(file_mode, predictor, clips, True, device=device, threads=a.threads)
    rows["plain loop: predict + embed, GRU on prefix"] = timed(plain_loop, yolo, predictor, clips, device, True, device=device, threads=a.threads)
    rows["plain loop: predict only, GRU on prefix"] = timed(plain_loop, yolo, predictor, clips, device, False, device=device, threads=a.threads)
    rows["r3d_18 16x112x112 window per frame"] = timed(r3d_windows, clips, device, a.r3d_windows, device=device, threads=a.threads)

    cfg = predictor.config
    print(f"device {a.device} ({a.threads} CPU threads)" + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""))
    print(f"{len(clips)} clips; extractor {Path(cfg.weights).name} imgsz {cfg.imgsz} layers {list(cfg.layers)} fps {cfg.fps}")
    print(f"{'method':<44} {'frames':>6} {'labels/s':>9} {'ms/label':>9}")
    fps = {}
    for name, (n, t) in rows.items():
        fps[name] = n / t
        print(f"{name:<44} {n:>6} {n / t:>9.1f} {1000 * t / n:>9.2f}")
    file_fps = fps["infer.py file mode"]
    print(f"file mode vs plain loop (predict + embed): {file_fps / fps['plain loop: predict + embed, GRU on prefix']:.1f}x")
    print(f"file mode vs plain loop (predict only):    {file_fps / fps['plain loop: predict only, GRU on prefix']:.1f}x")
    print(f"per-label cost, r3d_18 window / file mode: {file_fps / fps['r3d_18 16x112x112 window per frame']:.1f}x")
    lat = streaming_latency(predictor, clips[0], device)
    print(f"streaming, one frame at a time: median {np.median(lat):.2f} ms, p95 {np.percentile(lat, 95):.2f} ms per frame")
    return fps


if __name__ == "__main__":
    main()
