"""Does the motion rule read a person the same beside another as alone? Each descriptor version, one checkpoint.

    python benchmarks/motion_descriptor.py --checkpoint runs/weizmann/version_N/checkpoints/best-epoch=099.ckpt \\
        [--fold 0] [--root ../shared/data/weizmann] [--out runs/motion_descriptor.json]

The checkpoint's motion rule (``pipeline.model.novelty.MotionRule``) is fitted again on its own training split
(``--fold`` of leave-one-actor-out Weizmann, as ``train.py`` fitted it) with each version of ``describe``, and
run alone (the GRU-state rule off) on the pairs of ``benchmarks/side_by_side.py``: each person's clip alone
(180x144) and in the left or right half of the 360x144 pair. Printed per person: the median novelty of their
track after its first 10 frames (above 1 is ``unknown``), in the pair and alone. Version 1 refitted reproduces
the checkpoint's own rule when the checkpoint has one (its threshold is printed beside).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.side_by_side import PAIRS  # noqa: E402
from pipeline.data.composite import read_frames  # noqa: E402
from pipeline.data.datamodule import ActionDataModule  # noqa: E402
from pipeline.data.features import ExtractorConfig  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.inference.predictor import ActionPredictor  # noqa: E402
from pipeline.model.checkpoint import read_checkpoint  # noqa: E402
from pipeline.model.novelty import DESCRIPTOR, MotionRule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTLE = 10  # frames of a track left out of its median: the window is still filling


def medians(predictor: ActionPredictor, frames: np.ndarray, width: int) -> dict[str, float]:
    """Median novelty per side (``left``: box centre left of ``width``) of the tracks in ``frames``."""
    predictor.reset()
    out = [predictor(frames[i : i + 8]) for i in range(0, len(frames), 8)]
    track, novelty = np.concatenate([o.track for o in out]), np.concatenate([o.novelty for o in out])
    centre = np.concatenate([(o.boxes[:, 0] + o.boxes[:, 2]) / 2 for o in out])
    sides = {}
    for t in sorted(set(track.tolist())):
        mine = track == t
        if mine.sum() > SETTLE:
            sides["left" if np.median(centre[mine]) < width else "right"] = round(float(np.median(novelty[mine][SETTLE:])), 2)
    return sides


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint of leave-one-actor-out Weizmann (configs/weizmann.yaml)")
    p.add_argument("--fold", type=int, default=0, help="the fold it was trained on (fold 0: daria tested, denis validated)")
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "weizmann"))
    p.add_argument("--test-actors", nargs=2, default=["daria", "denis"], help="left and right: actors the checkpoint never trained on")
    p.add_argument("--out")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    hp = read_checkpoint(a.checkpoint)["hyper_parameters"]
    dm = ActionDataModule(dataset="weizmann", root=a.root, split="group", fold=a.fold, extractor=ExtractorConfig.from_record(hp["extractor"]))
    dm.setup("fit")
    seqs, _, videos = dm.data["train"]
    groups = [v.group or str(v.path) for v in videos]
    predictor = ActionPredictor(a.checkpoint, device="cpu")
    predictor.set_input_size(max_imgsz=640)
    own = predictor.novelty.motion
    if own is not None:
        print(f"the checkpoint's own rule: descriptor {own.descriptor}, threshold {own.threshold:.4f}")
    root, (left, right) = Path(a.root), a.test_actors
    clips = {}
    for x, y in PAIRS:
        lf, rf = read_frames(root / x / f"{left}_{x}.avi", fps=25.0), read_frames(root / y / f"{right}_{y}.avi", fps=25.0)
        n = min(len(lf), len(rf))
        clips[(x, y)] = (lf[:n], rf[:n])
    rows = []
    for version in range(1, DESCRIPTOR + 1):
        rule = MotionRule.fit(seqs, groups, dm.data["val"][0], hp["motion_window"], hp["motion_quantile"], max(hp["warmup_frames"], 2), descriptor=version)
        predictor.novelty.motion, predictor.novelty.prototypes = rule, None
        print(f"descriptor {version}: threshold {rule.threshold:.4f}")
        for (x, y), (lf, rf) in clips.items():
            width = lf.shape[2]
            pair = medians(predictor, np.concatenate([lf, rf], 2), width)
            alone = {"left": medians(predictor, lf, width).get("left"), "right": medians(predictor, rf, width).get("left")}
            rows.append({"descriptor": version, "pair": f"{x}|{y}", "in_pair": pair, "alone": alone})
            print(f"  {left}'s {x}: {pair.get('left')} in the pair, {alone['left']} alone;  {right}'s {y}: {pair.get('right')} in the pair, {alone['right']} alone")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"rows": rows, "args": vars(a)}, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    run_cli(main)
