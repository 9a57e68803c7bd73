"""Memory of infer.py's file mode on a long video: flat, or growing with length?

    python benchmarks/infer_memory.py [--minutes 5] [--checkpoint best.ckpt]

Builds a long video by repeating a Weizmann clip (written to a temporary folder), runs the file mode with
the JSON (per-frame), CSV and annotated video written, and samples the process's resident memory every
second. Prints memory after the first 10% of frames and at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from benchmarks.inference_speed import untrained_checkpoint  # noqa: E402
from benchmarks.live_latency import rss_mb  # noqa: E402
from pipeline.inference.files import OutputPaths, analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def long_video(clip: Path, out: Path, minutes: float) -> int:
    frames = []
    cap = cv2.VideoCapture(str(clip))
    while (ok := cap.read())[0]:
        frames.append(ok[1])
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    n = int(minutes * 60 * fps)
    for i in range(n):
        w.write(frames[i % len(frames)])
    w.release()
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--clip", default=str(ROOT.parent / "shared" / "data" / "weizmann" / "walk" / "daria_walk.avi"))
    p.add_argument("--minutes", type=float, default=5.0)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        n = long_video(Path(a.clip), d / "long.avi", a.minutes)
        predictor = ActionPredictor(a.checkpoint or untrained_checkpoint(d / "u.ckpt", "yolo11n-pose.pt"), device="auto")
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(rss_mb())

        threading.Thread(target=sample, daemon=True).start()
        t = time.perf_counter()
        r = analyse_video(str(d / "long.avi"), predictor, OutputPaths(video=d / "a.mp4", json=d / "a.json", csv=d / "a.csv"), progress=False)
        stop.set()
        elapsed = time.perf_counter() - t
    first = samples[max(len(samples) // 10, 1) - 1] if samples else float("nan")
    print(f"{n} frames ({a.minutes:g} min at 25 fps) in {elapsed:.0f} s ({r.processing_fps:.1f} fps), JSON + CSV + video written")
    print(f"resident memory: after 10% of the video {first:.0f} MB, at the end {samples[-1]:.0f} MB, max {max(samples):.0f} MB")


if __name__ == "__main__":
    main()
