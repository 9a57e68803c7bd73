"""A "wild" Weizmann: the lab clips made to look like real footage, for leave-one-actor-out development.

    python benchmarks/wild_weizmann.py [--root ../shared/data/weizmann] [--out datasets/weizmann_wild] [--per-clip 3]
    python benchmarks/cross_validate.py --config configs/weizmann.yaml --dataset weizmann_wild --seeds 0 1 2 \\
        --out runs/cv_weizmann_wild.json

Every Weizmann clip gives ``--per-clip`` short clips: a random stretch of 8 to 16 frames; with probability
one half another actor (another action) keyed out of their own clip (``pipeline.data.composite``) and pasted
beside or across the subject as a distractor, smaller (further away) than the subject; a random crop of 60
to 100% of the frame (zoom, the subject kept in view) that shakes by up to 4 pixels from frame to frame; the
result shrunk to 50 to 100% of 180x144 (reduced resolution) and written as MJPG. Names are
``<actor>_<action>_<k>.avi`` in class folders, so the definition ``datasets/weizmann_wild.yaml`` splits by
actor as Weizmann's does. Seeded: the same command builds the same clips. It is a development aid beside
real footage (``../shared/data/pushfit``), not a judge.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.data.composite import background, best_background, composite, foreground, keyable, read_frames, write_video  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIZMANN = ROOT.parent / "shared" / "data" / "weizmann"


def wild_clip(rng: np.random.Generator, frames: np.ndarray, key: np.ndarray, other: np.ndarray | None, other_key) -> np.ndarray:
    """One short, reframed, shaken, shrunk clip of ``frames``, with ``other``'s person pasted in when given."""
    n = int(rng.integers(8, 17))
    start = int(rng.integers(0, max(len(frames) - n, 0) + 1))
    clip = frames[start : start + n]
    if other is not None:
        o = other[int(rng.integers(0, max(len(other) - n, 0) + 1)) :][: len(clip)]
        if len(o) == len(clip):
            small = shrink_person(o, other_key, float(rng.uniform(0.6, 0.85)))
            dx = int(rng.integers(-70, 71))
            clip = composite([small, clip], [dx, 0], key, keys=[other_key, key])  # the subject in front
    h, w = clip.shape[1:3]
    scale = float(rng.uniform(0.6, 1.0))
    ch, cw = int(h * scale), int(w * scale)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out_scale = float(rng.uniform(0.5, 1.0))
    size = (max(int(w * out_scale) // 2 * 2, 32), max(int(h * out_scale) // 2 * 2, 32))
    out = []
    for f in clip:
        jy, jx = rng.integers(-4, 5, 2)
        y, x = int(np.clip(y0 + jy, 0, h - ch)), int(np.clip(x0 + jx, 0, w - cw))
        out.append(cv2.resize(f[y : y + ch, x : x + cw], size, interpolation=cv2.INTER_AREA))
    return np.stack(out)


def shrink_person(frames: np.ndarray, key: np.ndarray, factor: float) -> np.ndarray:
    """The clip as if its person stood further away: the person, keyed out at their own size, scaled by
    ``factor`` about the frame's bottom centre (feet stay near the ground) and laid over the empty scene."""
    h, w = key.shape[:2]
    m = np.float32([[factor, 0, (1 - factor) * w / 2], [0, factor, (1 - factor) * h * 0.85]])
    mask = foreground(frames, key)
    out = np.repeat(key[None], len(frames), 0)
    for f, k, o in zip(frames, mask, out):
        small = cv2.warpAffine(f, m, (w, h))
        where = cv2.warpAffine(k.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST).astype(bool)
        o[where] = small[where]
    return out


def build(a: argparse.Namespace) -> None:
    root, out = Path(a.root), Path(a.out)
    rng = np.random.default_rng(a.seed)
    paths = sorted(root.glob("*/*.avi"))
    if not paths:
        sys.exit(f"error: no Weizmann clips under {root}: pass --root")
    scenes = [background([read_frames(p)]) for c in ("walk", "run", "side") for p in sorted((root / c).glob("*.avi"))]
    clips = {p: read_frames(p) for p in paths}
    keys = {p: best_background(f, scenes) for p, f in clips.items()}
    pasteable = [p for p in paths if keyable(clips[p], keys[p])]
    written = 0
    for p in paths:
        actor, action = p.stem.split("_")[0], p.parent.name
        others = [q for q in pasteable if q.stem.split("_")[0] != actor and q.parent.name != action]
        for k in range(a.per_clip):
            other = others[int(rng.integers(len(others)))] if others and rng.random() < 0.5 else None
            frames = wild_clip(rng, clips[p], keys[p], clips[other] if other else None, keys[other] if other else None)
            write_video(out / action / f"{p.stem}_{k}.avi", frames, 25.0)
            written += 1
        print(f"\r{written} clips written", end="", flush=True)
    print(f"\n{written} clips from {len(paths)} in {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(WEIZMANN))
    p.add_argument("--out", default=str(ROOT / "datasets" / "weizmann_wild"))
    p.add_argument("--per-clip", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    build(p.parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
