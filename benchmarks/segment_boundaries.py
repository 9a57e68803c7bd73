"""Where does ``infer.py`` put the change between two actions? Concatenated held-out clips, cuts known.

    python benchmarks/segment_boundaries.py --loao runs/cv_weizmann.json [--seed 0] [--per-actor 4]

For every fold of a leave-one-actor-out run (``benchmarks/cross_validate.py``'s JSON), the held-out
actor's clips are joined three at a time (three different actions, in a seeded random order) into one
video, and that fold's checkpoint labels it with ``infer.py`` (file mode). Each true cut is matched to the
nearest boundary between two of ``infer.py``'s segments; printed: the median and 90th percentile of
|boundary - cut| (of the cuts with a boundary within 1 s), the share of cuts within 0.2 s and within 0.5 s,
cuts without any boundary within 1 s, extra boundaries, the share of time whose segment label is right,
and how often the video label is the action that lasts longest. From the per-frame probabilities of the
CSV, the causal timeline (the live view's, and file mode's before segments were settled) and the raw
per-frame argmax are scored the same way.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.timeline import Timeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def join_clips(paths: list[Path], out: Path) -> list[tuple[float, float, str]]:
    """Write the clips one after another (same size and fps, as Weizmann's are) -> their spans in seconds."""
    spans, writer, t = [], None, 0.0
    for p in paths:
        cap = cv2.VideoCapture(str(p))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
            writer.write(frame)
            n += 1
        cap.release()
        spans.append((t, t + n / fps, p.parent.name))
        t += n / fps
    writer.release()
    return spans


def boundaries(segments: list[dict]) -> list[float]:
    return [s["start_s"] for s in segments[1:]]


def per_frame(csv_path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Times and probabilities of the person in view at each frame (the longest track when several are:
    the shots of a joined video are one person each, on a track of their own), and the class names."""
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    names, rows = rows[0][5:], rows[1:]
    length = {}
    for r in rows:
        length[r[2]] = length.get(r[2], 0) + 1
    best: dict[float, list[str]] = {}
    for r in rows:
        t = float(r[1])
        if t not in best or length[r[2]] > length[best[t][2]]:
            best[t] = r
    times = sorted(best)
    return np.array(times), np.array([[float(v) for v in best[t][5:]] for t in times]), names


def changes(times: np.ndarray, labels: list[str]) -> list[float]:
    return [float(t) for t, a, b in zip(times[1:], labels, labels[1:]) if a != b]


def score(cuts: list[float], found: list[float]) -> tuple[list[float], int, int]:
    """Per cut, the distance to the nearest boundary; cuts with none within 1 s; boundaries near no cut."""
    errors = [min((abs(b - c) for b in found), default=float("inf")) for c in cuts]
    extra = sum(1 for b in found if min(abs(b - c) for c in cuts) > 1.0)
    return errors, sum(e > 1.0 for e in errors), extra


def label_at(t: float, segments: list[dict]) -> str:
    return next((s["label"] for s in segments if s["start_s"] <= t < s["end_s"]), segments[-1]["label"] if segments else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loao", required=True, help="cross_validate.py JSON of a leave-one-actor-out run")
    p.add_argument("--seed", type=int, default=0, help="which seed's fold checkpoints")
    p.add_argument("--per-actor", type=int, default=4, help="joined videos per held-out actor")
    p.add_argument("--out", help="write the per-video results here (JSON)")
    p.add_argument("--causal", type=float, nargs=2, default=[0.3, 0.5], metavar=("SMOOTH", "MIN_SEGMENT"),
                   help="the causal timeline to compare with (infer.py's defaults)")
    p.add_argument("infer_args", nargs="*", help="after --: further infer.py options (e.g. --smooth 0.5)")
    a = p.parse_args(argv)
    folds = [f for f in json.loads(Path(a.loao).read_text())["folds"] if f["seed"] == a.seed]
    rng = random.Random(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in folds:
            report_path = Path(f["report"])
            report = json.loads(report_path.read_text())
            ckpt = report["checkpoint"]
            clips = [Path(v["path"]) for v in report["videos"]]
            videos = {}
            for k in range(a.per_actor):
                pick = rng.sample(clips, 3)
                out = Path(tmp) / f"{f['test']}_{k}.avi"
                videos[out] = join_clips(pick, out)
            res = Path(tmp) / f"out{f['fold']}"
            cmd = [sys.executable, "infer.py", *map(str, videos), "-c", ckpt, "--output", str(res), "-q", *a.infer_args]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"fold {f['fold']}: infer.py failed: {r.stderr.strip()[-500:]}")
            for path, spans in videos.items():
                doc = json.loads((res / f"{path.stem}.json").read_text())
                cuts = [s[0] for s in spans[1:]]
                segs = doc["segments"]
                times, probs, names = per_frame(res / f"{path.stem}.csv")
                labels = [names[i] for i in probs.argmax(1)]
                raw = changes(times, labels)
                causal = Timeline(names, *a.causal)  # what file mode did before settling: the live view's smoothing
                for t, p in zip(times, probs):
                    causal.add(t, p)
                truth = [next((lab for s0, s1, lab in spans if t < s1), spans[-1][2]) for t in times]
                seg_right = np.mean([label_at(t, segs) == y for t, y in zip(times, truth)]) if len(times) else 0.0
                longest = max(spans, key=lambda s: s[1] - s[0])[2]
                rows.append({
                    "video": f"{f['test']}: " + " + ".join(s[2] for s in spans), "cuts": cuts, "boundaries": boundaries(segs),
                    "raw_boundaries": raw, "causal_boundaries": boundaries([x.to_dict() for x in causal.segments()]), "segment_time_right": float(seg_right), "label": doc["video"]["label"], "longest": longest,
                    "raw_frame_right": float(np.mean([y == lab for y, lab in zip(truth, labels)])) if len(labels) else 0.0,
                })  # fmt: skip
            print(f"fold {f['fold']} ({f['test']}): {len(videos)} videos", flush=True)
    summary = {}
    for key in ("boundaries", "causal_boundaries", "raw_boundaries"):
        errs, missed, extra = [], 0, 0
        for r in rows:
            e, m, x = score(r["cuts"], r[key])
            errs += e
            missed, extra = missed + m, extra + x
        near = [e for e in errs if e <= 1.0]
        summary[key] = {
            "cuts": len(errs), "median_s": statistics.median(near) if near else None,
            "p90_s": float(np.percentile(near, 90)) if near else None,
            "within_0.2s": sum(e <= 0.2 for e in errs) / len(errs), "within_0.5s": sum(e <= 0.5 for e in errs) / len(errs),
            "missed": missed, "extra": extra,
        }  # fmt: skip
    summary["segment_time_right"] = float(np.mean([r["segment_time_right"] for r in rows]))
    summary["raw_frame_right"] = float(np.mean([r["raw_frame_right"] for r in rows]))
    summary["video_label_is_longest"] = float(np.mean([r["label"] == r["longest"] for r in rows]))
    names = (("boundaries", "segments (infer.py)"), ("causal_boundaries", "causal segments"), ("raw_boundaries", "per-frame argmax"))
    for key, name in names:
        s = summary[key]
        print(f"{name:<22} cuts {s['cuts']}: median {s['median_s']:.2f} s, p90 {s['p90_s']:.2f} s, within 0.2 s "
              f"{s['within_0.2s']:.2f}, within 0.5 s {s['within_0.5s']:.2f}, missed {s['missed']}, extra boundaries {s['extra']}")  # fmt: skip
    print(f"time under the right segment label {summary['segment_time_right']:.3f} (raw frames {summary['raw_frame_right']:.3f}); "
          f"video label = longest action in {summary['video_label_is_longest']:.2f} of {len(rows)} videos")  # fmt: skip
    if a.out:
        Path(a.out).write_text(json.dumps({"summary": summary, "videos": rows, "args": vars(a)}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
