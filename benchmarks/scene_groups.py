"""Group a folder of clips by scene, for folds that keep one recording out of both train and test.

    python benchmarks/scene_groups.py --root ../shared/data/pushfit --out runs/pushfit_scenes.csv \\
        [--threshold 0.7] [--sheet runs/pushfit_scenes.png]
    python benchmarks/cross_validate.py --dataset runs/pushfit_scenes.csv --root ../shared/data/pushfit \\
        --split group --num-folds 5 --out runs/cv_pushfit_scenes.json -- --data.cache_dir=datasets/cache/pushfit

The groups are ``pipeline.data.scenes``' (what ``--data.split scene`` uses): see there how they are made.
Written: a CSV of ``path,label,group`` (classes from the class folders; groups numbered from the largest) for
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

from pipeline.data.scenes import THRESHOLD, groups_of, median_frame, signature  # noqa: E402
from pipeline.data.videoset import DatasetDefinition, DatasetError, list_videos  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a folder of class folders of videos")
    p.add_argument("--out", required=True, help="the CSV to write (path,label,group)")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="scene correlation above which two clips are one group")
    p.add_argument("--sheet", help="a PNG of the largest groups' median frames, one row a group")
    a = p.parse_args(argv)
    root = Path(a.root).resolve()
    videos, classes = list_videos(DatasetDefinition.load(root), root)
    kept, scenes, skipped = [], [], []
    for v in videos:
        s = median_frame(v.path)
        if s is None:
            skipped.append(v.path)
            continue
        kept.append(v)
        scenes.append(s)
    if not scenes:
        raise DatasetError(f"no frame could be read from any of the {len(videos)} videos under {root}: are they videos?")
    group = groups_of(np.stack([signature(s) for s in scenes]), a.threshold)
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
