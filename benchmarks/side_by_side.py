"""Two held-out people side by side: is each found, tracked once, and labelled with their own action?

    python benchmarks/side_by_side.py --checkpoint runs/weizmann/version_0/checkpoints/best.ckpt \\
        [--test-actors daria denis] [--max-imgsz 640 0] [--out runs/side_by_side.json]

A fold's checkpoint (fold 0 of ``configs/weizmann.yaml``: daria is its test actor and denis its validation
actor, so neither trained it) labels 360x144 videos of one actor's in-place action on the left and the
other's on the right, whole frames side by side (each person about 110 px tall, as in their own clips).
Per pair and per input-size setting (``--max-imgsz``: the cap of ``ExtractorConfig.max_imgsz``; 0 = every
source at the checkpoint's imgsz): the tracks that last at least a second, each assigned to the side its
box centre keeps to, and its label as ``infer.py`` gives it (file mode, the checkpoint's ``unknown`` rules
on: an ``unknown`` counts as wrong). Printed: tracks per video and how many of the people got their own
action as their track's label.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.composite import read_frames, write_video  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.inference.files import OutputPaths, analyse_video  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("bend", "jack"), ("jack", "wave2"), ("pjump", "wave1"), ("wave2", "bend"))


def run_pair(predictor: ActionPredictor, frames: np.ndarray, folder: Path, name: str) -> dict[int, dict]:
    """``infer.py``'s file mode over the pair: each track's label (the checkpoint's ``unknown`` rules on, as a
    user sees it), frames, and mean box centre x (from the timeline JSON)."""
    video = write_video(folder / f"{name}.avi", frames, 25.0)
    result = analyse_video(str(video), predictor, OutputPaths(json=folder / f"{name}.json"), progress=False)
    doc = json.loads((folder / f"{name}.json").read_text())
    xs: dict[int, list[float]] = {}
    for f in doc["frames"]:
        for t in f["tracks"]:
            xs.setdefault(t["id"], []).append((t["box"][0] + t["box"][2]) / 2)
    return {t.id: {"frames": t.frames, "x": float(np.mean(xs.get(t.id, [0.0]))), "label": t.label} for t in result.tracks}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "weizmann"))
    p.add_argument("--test-actors", nargs=2, default=["daria", "denis"], help="left and right: actors the checkpoint never trained on")
    p.add_argument("--max-imgsz", type=int, nargs="+", default=[0, 640], help="caps to compare (0: the checkpoint's imgsz for every source)")
    p.add_argument("--out")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    root, (left, right) = Path(a.root), a.test_actors
    folder = Path(tempfile.mkdtemp(prefix="side_by_side-"))
    rows = []
    for cap in a.max_imgsz:
        predictor = ActionPredictor(a.checkpoint, device="cpu")
        predictor.set_input_size(max_imgsz=cap)
        right_labels, tracks_per_video = 0, []
        for x, y in PAIRS:
            l, r = read_frames(root / x / f"{left}_{x}.avi", fps=25.0), read_frames(root / y / f"{right}_{y}.avi", fps=25.0)
            n = min(len(l), len(r))
            pair = run_pair(predictor, np.concatenate([l[:n], r[:n]], 2), folder, f"{x}_{y}_{cap}")
            tracks = {k: t for k, t in pair.items() if t["frames"] >= 25}
            sides = {"left": (x, []), "right": (y, [])}
            for t in tracks.values():
                sides["left" if t["x"] < l.shape[2] else "right"][1].append(t["label"])
            got = {side: labels for side, (_, labels) in sides.items()}
            ok = sum(1 for side, (truth, labels) in sides.items() if len(labels) == 1 and labels[0] == truth)
            right_labels += ok
            tracks_per_video.append(len(tracks))
            rows.append({"max_imgsz": cap, "pair": f"{x}|{y}", "tracks": len(tracks), "labels": got, "right": ok})
            print(f"max_imgsz {cap:4d} {x}|{y}: {len(tracks)} track(s), left {got['left']} right {got['right']}: {ok} of 2 right", flush=True)
        print(f"max_imgsz {cap}: tracks per video {tracks_per_video}, own action as the track's label for {right_labels} of {2 * len(PAIRS)} people")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"rows": rows, "args": vars(a)}, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    run_cli(main)
