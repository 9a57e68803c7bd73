"""Live demo figures: a Weizmann clip replayed in real time (a stand-in camera) through the live loop.

    python benchmarks/live_latency.py [--checkpoint best.ckpt] [--minutes 10] [--imgsz 320] [--device cpu]

Prints processed frames per second, dropped frames, capture-to-display latency (p50, p95, max; here the
"display" is the annotated frame ready to show, headless) and the process's resident memory sampled over
the run (start, end, max), per minute. Without a checkpoint an untrained one with the default config's
extractor is used (speed does not depend on trained weights); ``--imgsz`` overrides its image size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.inference_speed import untrained_checkpoint  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402
from pipeline.live.capture import LatestFrameCapture  # noqa: E402
from pipeline.live.loop import LiveOptions, run_live  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--weights", default="yolo11n-pose.pt")
    p.add_argument("--clip", default=str(ROOT.parent / "shared" / "data" / "weizmann" / "jack" / "daria_jack.avi"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--imgsz", type=int, help="override the checkpoint's image size (the live size)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/live_latency.json")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        ckpt = a.checkpoint or untrained_checkpoint(Path(d) / "untrained.ckpt", a.weights)
        if a.imgsz:
            blob = torch.load(ckpt, weights_only=True)
            blob["hyper_parameters"]["extractor"]["imgsz"] = a.imgsz  # same feature size: only speed and accuracy change
            ckpt = Path(d) / "live.ckpt"
            torch.save(blob, ckpt)
        predictor = ActionPredictor(ckpt, device=a.device)
    predictor(np.zeros((1, 144, 180, 3), np.uint8))  # warm-up

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.wait(5.0):
            samples.append((time.perf_counter() - t0, rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    rss_start = rss_mb()
    sampler.start()
    capture = LatestFrameCapture(a.clip, realtime=True, loop=True)
    stats = run_live(predictor, capture, LiveOptions(show=False, duration_s=60 * a.minutes))
    stop.set()
    s = stats.summary()
    rss = [m for _, m in samples] or [rss_start]
    lat = np.asarray(stats.latencies_ms)
    per_minute = [float(np.percentile(chunk, 95)) for chunk in np.array_split(lat, max(int(a.minutes), 1))]
    cfg = predictor.config
    print(f"device {predictor.device}, {torch.get_num_threads()} threads; {Path(cfg.weights).name} imgsz {cfg.imgsz}; "
          f"source {Path(a.clip).name} replayed at {capture.fps:.0f} fps for {a.minutes:g} min")  # fmt: skip
    print(f"processed {s['processed_fps']} fps ({s['processed_frames']} of {s['frames_from_source']} frames, {s['dropped_frames']} dropped)")
    print(f"latency capture -> display: p50 {s['latency_ms_p50']} ms, p95 {s['latency_ms_p95']} ms, max {s['latency_ms_max']} ms")
    print("p95 latency per minute (ms): " + ", ".join(f"{v:.1f}" for v in per_minute))
    print(f"resident memory: start {rss_start:.0f} MB, end {rss[-1]:.0f} MB, max {max(rss):.0f} MB")
    result = {**s, "imgsz": cfg.imgsz, "rss_mb_start": rss_start, "rss_mb_end": rss[-1], "rss_mb_max": max(rss),
              "p95_per_minute_ms": per_minute, "rss_samples": samples}  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
