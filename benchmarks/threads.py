"""How many torch threads beside the decoding thread: file-mode speed and one-frame latency per setting.

    python benchmarks/threads.py [--checkpoint best.ckpt] [--threads 1,2] [--rounds 3]

``infer.py`` decodes in a thread of its own while torch runs the model with its intra-op threads; on a small
machine the two can ask for more cores than there are. On the same clips (5 Weizmann, 180x144, and 5 pushfit,
640x360 H.264, whose decoding costs more), each setting in turn, rounds interleaved so that the machine's drift
falls on all alike: file mode frames per second (median of the rounds) and the one-frame-at-a-time latency
p50 / p95 of the live path. Without ``--checkpoint`` an untrained classifier with the default config's
extractor is used (speed does not depend on the classifier's weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.inference_speed import untrained_checkpoint  # noqa: E402
from pipeline.data.composite import read_frames  # noqa: E402
from pipeline.inference.files import analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def clips() -> dict[str, list[Path]]:
    return {
        "weizmann": sorted((SHARED / "weizmann").glob("*/daria_*.avi"))[:5],
        "pushfit": sorted((SHARED / "pushfit" / "correct").glob("*.mp4"), key=lambda p: p.stat().st_size)[60:65],
    }


def file_fps(predictor: ActionPredictor, paths: list[Path]) -> float:
    n, t0 = 0, time.perf_counter()
    for p in paths:
        n += analyse_video(str(p), predictor, progress=False).processed_frames
    return n / (time.perf_counter() - t0)


def latency(predictor: ActionPredictor, frames: np.ndarray) -> tuple[float, float]:
    predictor.reset(25.0)
    lat = []
    for f in frames:
        t0 = time.perf_counter()
        predictor(f[None])
        lat.append(1000 * (time.perf_counter() - t0))
    lat = np.asarray(lat[5:])
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--weights", default="yolo11n-pose.pt")
    p.add_argument("--threads", default=",".join(str(t) for t in range(1, (os.cpu_count() or 2) + 1)))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="runs/threads.json")
    a = p.parse_args(argv)
    settings = [int(t) for t in a.threads.split(",")]
    with tempfile.TemporaryDirectory() as d:
        predictor = ActionPredictor(a.checkpoint or untrained_checkpoint(Path(d) / "u.ckpt", a.weights), device="cpu")
    sets = clips()
    live_frames = read_frames(sets["pushfit"][0], max_frames=60)
    results: dict = {t: {"fps": {k: [] for k in sets}, "p50": [], "p95": []} for t in settings}
    file_fps(predictor, sets["weizmann"][:1])  # warm-up
    for r in range(a.rounds):
        for t in settings:
            torch.set_num_threads(t)
            for name, paths in sets.items():
                results[t]["fps"][name].append(file_fps(predictor, paths))
            p50, p95 = latency(predictor, live_frames)
            results[t]["p50"].append(p50)
            results[t]["p95"].append(p95)
            print(f"round {r + 1}, {t} thread(s): " + ", ".join(f"{k} {v[-1]:.1f} fps" for k, v in results[t]["fps"].items())
                  + f", one frame p50 {p50:.1f} ms p95 {p95:.1f} ms", flush=True)  # fmt: skip
    out = {"cores": os.cpu_count(), "clips": {k: [str(x) for x in v] for k, v in sets.items()}, "rounds": a.rounds, "settings": {}}
    for t in settings:
        row = {f"{k}_fps": round(float(np.median(v)), 1) for k, v in results[t]["fps"].items()}
        row |= {"p50_ms": round(float(np.median(results[t]["p50"])), 1), "p95_ms": round(float(np.median(results[t]["p95"])), 1)}
        out["settings"][t] = row
        print(f"{t} thread(s) beside decoding: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
