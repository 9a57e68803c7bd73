"""How big must the pose model's input be to find everyone? People found and CPU cost per input size.

    python benchmarks/detection_size.py [--sizes 320 480 640 320-640] [--pushfit 24] [--out runs/detection_size.json]

Sources, each with a known number of people in view:
* ``pairs``: two Weizmann actors' clips side by side (360x144, each person about 110 px tall), every
  in-place action of one actor (daria) beside another's (denis), 2 people in every frame;
* ``weizmann``: single actors' in-place clips (180x144), 1 person;
* ``pushfit``: ``--pushfit`` clips of ``../shared/data/pushfit`` spread over its sizes (320x240 to
  1920x1080), 1 person (sometimes a second in the background: counted, not judged).
For each input size (the long side N; or ``LOW-HIGH``: each source at its own long side within them,
``ExtractorConfig.max_imgsz``)
and each source: people found per frame at the extractor's start score (``conf``), the share of frames where
the known number or more are found, and milliseconds a frame on this machine's CPU (extraction alone, pose
only, 2 threads). Which input size each source ran at is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.composite import read_frames  # noqa: E402
from pipeline.data.features import ExtractorConfig, FeatureExtractor  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_PLACE = ("bend", "jack", "pjump", "wave1", "wave2")


def sources(weizmann: Path, pushfit: Path, n_pushfit: int) -> dict[str, list[tuple[str, np.ndarray, int]]]:
    """name -> [(clip name, frames (T, H, W, 3), people in view)]."""
    pairs, single = [], []
    for i, a in enumerate(IN_PLACE):
        b = IN_PLACE[(i + 1) % len(IN_PLACE)]
        x, y = read_frames(weizmann / a / f"daria_{a}.avi", max_frames=48), read_frames(weizmann / b / f"denis_{b}.avi", max_frames=48)
        t = min(len(x), len(y))
        pairs.append((f"{a}|{b}", np.concatenate([x[:t], y[:t]], 2), 2))
        single.append((f"daria_{a}", x, 1))
    out = {"pairs": pairs, "weizmann": single}
    clips = sorted(pushfit.glob("*/*.mp4")) + sorted(pushfit.glob("*/*.avi")) + sorted(pushfit.glob("*/*.mov"))
    if clips and n_pushfit:
        sized = sorted(clips, key=lambda p: (read_frames(p, max_frames=1).shape[1:3], p.name))  # spread over the sizes
        pick = [sized[round(k)] for k in np.linspace(0, len(sized) - 1, min(n_pushfit, len(sized)))]
        out["pushfit"] = [(p.name, read_frames(p, max_frames=32), 1) for p in pick]
    return out


def measure(clips: list[tuple[str, np.ndarray, int]], config: ExtractorConfig, batch: int = 16) -> dict:
    extractor = FeatureExtractor(config).place("cpu")
    found, enough, frames, seconds, sizes = [], [], 0, 0.0, set()
    for _, x, people in clips:
        sizes.add(extractor.input_size(x.shape[1], x.shape[2]))
        extractor(x[:2])  # warm-up at this shape
        for s in range(0, len(x), batch):
            t0 = time.perf_counter()
            det = extractor(x[s : s + batch])
            seconds += time.perf_counter() - t0
            counts = torch.bincount(det.frame[det.scores >= config.conf], minlength=len(x[s : s + batch])).numpy()
            found += counts.tolist()
            enough += (counts >= people).tolist()
            frames += len(counts)
    return {"people_per_frame": round(float(np.mean(found)), 3), "frames_with_all": round(float(np.mean(enough)), 3),
            "ms_per_frame": round(1000 * seconds / frames, 2), "input_long_sides": sorted(sizes)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["320", "480", "640", "320-640", "640-960"],
                   help="input long sides: N, or LOW-HIGH (each source at its own long side within LOW and HIGH: max_imgsz)")
    p.add_argument("--weizmann", default=str(SHARED / "data" / "weizmann"))
    p.add_argument("--pushfit", default=str(SHARED / "data" / "pushfit"))
    p.add_argument("--n-pushfit", type=int, default=24)
    p.add_argument("--weights", default="yolo11n-pose.pt")
    p.add_argument("--out")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    data = sources(Path(a.weizmann), Path(a.pushfit), a.n_pushfit)
    rows = []
    for size in a.sizes:
        low, _, high = size.partition("-")
        config = ExtractorConfig(weights=a.weights, layers=(), imgsz=int(low), max_imgsz=int(high) if high else None)
        for name, clips in data.items():
            r = {"size": size, "source": name, **measure(clips, config)}
            rows.append(r)
            print(f"size {size:>4} {name:9s}: {r['people_per_frame']:.2f} people a frame, all found in {r['frames_with_all']:.0%} of frames, "
                  f"{r['ms_per_frame']:.1f} ms a frame (inputs {r['input_long_sides']})", flush=True)  # fmt: skip
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"rows": rows, "args": vars(a)}, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    run_cli(main)
