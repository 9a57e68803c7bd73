"""Group a folder of clips by scene, for folds that keep one recording out of both train and test.

    python benchmarks/scene_groups.py --root ../shared/data/pushfit --out runs/pushfit_scenes.csv \\
        [--threshold 0.7] [--sheet runs/pushfit_scenes.png]
    python benchmarks/cross_validate.py --dataset runs/pushfit_scenes.csv --root ../shared/data/pushfit \\
        --split group --num-folds 5 --out runs/cv_pushfit_scenes.json -- --data.cache_dir=datasets/cache/pushfit

Footage without person ids in its names (``../shared/data/pushfit``) often holds several clips cut from one
recording: the same person, room and camera. Stratified folds put such near-duplicates in train and test,
which rewards recognising the room. Here each clip is reduced to its median frame (nine frames spread over
the clip: the moving person fades, the scene stays), shrunk to 24x24 and standardised; clips whose scenes
correlate above ``--threshold`` are linked, and each connected set is one group (single linkage: a chain of
similar scenes is one group, which errs towards putting together what might be one source). Written: a CSV of
``path,label,group`` (classes from the class folders; groups numbered from the largest) for
``--data.split group``; with ``--sheet``, a picture of the largest groups' median frames, one row a group,
to check by eye that a row is one place.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.data.videoset import DatasetDefinition, DatasetError, list_videos  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402

SAMPLES = 9  # frames per clip whose median is its scene
SIDE = 24  # the scene's signature is SIDE x SIDE x 3


def scene(path: Path) -> np.ndarray | None:
    """A clip's median frame (BGR, small), or None when no frame can be read."""
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for k in np.linspace(0.05, 0.95, SAMPLES):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(max(n - 1, 0) * k))
        ok, f = cap.read()
        if ok:
            frames.append(cv2.resize(f, (96, 54), interpolation=cv2.INTER_AREA).astype(np.float32))
    cap.release()
    return np.median(np.stack(frames), 0) if frames else None


def groups_of(scenes: list[np.ndarray], threshold: float) -> list[int]:
    """Each clip's group: connected sets of clips whose scene signatures correlate above ``threshold``,
    numbered from the largest set."""
    sig = np.stack([cv2.resize(s, (SIDE, SIDE), interpolation=cv2.INTER_AREA).ravel() for s in scenes])
    sig = (sig - sig.mean(1, keepdims=True)) / (sig.std(1, keepdims=True) + 1e-6)
    linked = sig @ sig.T / sig.shape[1] > threshold
    parent = list(range(len(scenes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(linked, 1))):
        parent[root(int(i))] = root(int(j))
    members: dict[int, list[int]] = {}
    for i in range(len(scenes)):
        members.setdefault(root(i), []).append(i)
    order = sorted(members.values(), key=lambda m: (-len(m), m[0]))
    group = [0] * len(scenes)
    for g, m in enumerate(order):
        for i in m:
            group[i] = g
    return group


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a folder of class folders of videos")
    p.add_argument("--out", required=True, help="the CSV to write (path,label,group)")
    p.add_argument("--threshold", type=float, default=0.7, help="scene correlation above which two clips are one group")
    p.add_argument("--sheet", help="a PNG of the largest groups' median frames, one row a group")
    a = p.parse_args(argv)
    root = Path(a.root).resolve()
    videos, classes = list_videos(DatasetDefinition.load(root), root)
    kept, scenes, skipped = [], [], []
    for v in videos:
        s = scene(v.path)
        if s is None:
            skipped.append(v.path)
            continue
        kept.append(v)
        scenes.append(s)
    if not scenes:
        raise DatasetError(f"no frame could be read from any of the {len(videos)} videos under {root}: are they videos?")
    group = groups_of(scenes, a.threshold)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for v, g in zip(kept, group):
            w.writerow([str(v.path), classes[v.label], f"scene{g:03d}"])
    sizes = np.bincount(group)
    print(f"{len(kept)} clips in {len(sizes)} scene groups (largest {', '.join(map(str, sizes[:8]))}; {int((sizes == 1).sum())} alone) -> {out}")
    for path in skipped:
        print(f"skipped {path}: no frame could be read")
    if a.sheet:
        rows = []
        for g in range(min(14, len(sizes))):
            row = [scenes[i].astype(np.uint8) for i in range(len(kept)) if group[i] == g][:12]
            rows.append(np.hstack(row + [np.zeros_like(row[0])] * (12 - len(row))))
        cv2.imwrite(a.sheet, np.vstack(rows))
        print(f"sheet of the {len(rows)} largest groups -> {a.sheet}")
    return {"groups": len(sizes), "clips": len(kept)}


if __name__ == "__main__":
    run_cli(run)
