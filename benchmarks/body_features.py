"""Which features carry across cameras? Time-blind models of each body block, alone and together, on the same folds.

    python benchmarks/body_features.py --dataset ../shared/data/pushfit --split scene --split-seeds 0 1 2 \\
        --cache-dir datasets/cache/pushfit --out runs/body_features_pushfit.json

For every fold (and deal), each video becomes one vector of statistics over its subject's frames of a
feature set: the file's width, height and frame rate alone (``source file``: no person at all), the
person's box shape alone (``box shape``: width over height in pixels, how the camera sees the body: from the
side, a wide box; from the front, a compact one), the pose block as cached, its parts (the box alone, the keypoints in the box alone), and the
body-relative blocks of ``pipeline.model.body`` (``centred``, ``bones``, ``angles``, ``confident``) alone
and combined, with the geometry made at a guessed 16:9 frame and at the video's true aspect (read from the
file: what a feature that carried the frame's shape would give). Statistics: ``mean``; ``mean_std``
(and spread); ``motion`` (mean, spread and the mean absolute change from frame to frame: how much and how
fast the body moves, still blind to order). Scored as ``benchmarks/time_blind_baseline.py`` does (logistic
regression, L2 chosen on validation, video top-1), so a row here and there compare one to one. Printed:
mean over folds and deals per set and statistic, and the paired difference against the pose block's mean.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.cross_validate import fold_count  # noqa: E402
from benchmarks.time_blind_baseline import accuracy, fit  # noqa: E402
from pipeline.data.datamodule import ActionDataModule  # noqa: E402
from pipeline.data.features import KCONF, KXY, POSE_DIM, ExtractorConfig  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.model.body import body_features  # noqa: E402
from pipeline.model.frame_probe import L2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = {
    "source file": None, "box shape": None, "pose block": None, "box": None, "keypoints in box": None,
    "centred": ("centred",), "bones": ("bones",), "angles": ("angles",), "confident": ("confident",),
    "bones+angles": ("bones", "angles"), "centred+bones+angles": ("centred", "bones", "angles"),
    "all body": ("centred", "bones", "angles", "confident"),
}  # fmt: skip
STATS = ("mean", "mean_std", "motion")
GUESS = (16.0, 9.0, 25.0)  # the frame shape the body blocks assume without the file's


def frames(x: torch.Tensor, name: str, source: tuple[float, float, float]) -> torch.Tensor:
    """A video's cached features (T, D) and its file's (width, height, fps) -> the feature set ``name`` over
    the frames its subject is seen in; ``source file`` is the file's shape and rate alone (no person at all:
    what the footage's making tells of the label)."""
    seen = x[x[:, -POSE_DIM] > 0] if (x[:, -POSE_DIM] > 0).sum() >= 2 else x
    pose = seen[:, -POSE_DIM:].float()
    if name == "source file":
        w, h, fps = source
        return torch.tensor([[w / 1000, h / 1000, w / h, fps / 30]])
    if name == "pose block":
        return pose
    if name == "box":
        return pose[:, 2:6]
    if name == "box shape":  # width over height in pixels: a side view's wide box, a front view's compact one
        return (pose[:, 4:5] / pose[:, 5:6].clamp(min=1e-3) * source[0] / source[1]).clamp(max=10).log()
    if name == "keypoints in box":
        return torch.cat([pose[:, KXY], pose[:, KCONF]], 1)
    return body_features(seen, SETS[name], source[0] / source[1])


def summary(f: torch.Tensor, stats: str) -> torch.Tensor:
    """Frames (T, F) -> one vector, blind to order."""
    parts = [f.mean(0)]
    if stats in ("mean_std", "motion"):
        parts.append(f.std(0) if len(f) > 1 else torch.zeros_like(f[0]))
    if stats == "motion":
        parts.append((f[1:] - f[:-1]).abs().mean(0))
    return torch.cat(parts).nan_to_num()


def source_of(path: Path) -> tuple[float, float, float]:
    """The file's width, height and frame rate (16:9 at 25 fps where the container does not say)."""
    cap = cv2.VideoCapture(str(path))
    w, h, fps = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return (w, h, fps or 25.0) if w > 0 and h > 0 else (16.0, 9.0, fps or 25.0)


def score(dm: ActionDataModule, name: str, stats: str, sources: dict[str, tuple[float, float, float]], true: bool) -> float:
    """Video top-1 of the time-blind model of one set and statistic on the fold of ``dm``."""
    rows = {}
    for s in ("train", "val", "test"):
        seqs, labels, videos = dm.data[s]
        x = torch.stack([summary(frames(q, name, sources[str(v.path)] if true else GUESS), stats) for q, v in zip(seqs, videos)])
        rows[s] = (x, torch.tensor(labels), torch.arange(len(labels)))
    (xt, yt, _), (xv, yv, vv), (xs, ys, vs) = rows["train"], rows["val"], rows["test"]
    classes = len(dm.class_names)
    l2 = max(L2, key=lambda c: (accuracy(fit(xt, yt, classes, c), xv, yv, vv), c))
    return accuracy(fit(torch.cat([xt, xv]), torch.cat([yt, yv]), classes, l2), xs, ys, vs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "weizmann.yaml"))
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--split", choices=("group", "scene", "stratified"))
    p.add_argument("--split-seeds", type=int, nargs="*", default=[0])
    p.add_argument("--cache-dir")
    p.add_argument("--sets", nargs="*", default=list(SETS), choices=list(SETS))
    p.add_argument("--stats", nargs="*", default=list(STATS), choices=STATS)
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = yaml.safe_load(Path(a.config).read_text()).get("data", {})
    extractor = ExtractorConfig(**data.pop("extractor", {}))
    for key, value in (("dataset", a.dataset), ("root", a.root), ("split", a.split), ("cache_dir", a.cache_dir)):
        if value is not None:
            data[key] = value
    t0, results, sources = time.perf_counter(), {}, {}
    geometric = [n for n in a.sets if SETS[n]]
    for deal in a.split_seeds:
        for k in range(fold_count(a.config, a.dataset, a.root, a.split, None)):
            dm = ActionDataModule(**{**data, "fold": k, "split_seed": deal}, extractor=extractor)
            dm.prepare_data()
            dm.setup("fit")
            dm.setup("test")
            sources.update({str(v.path): source_of(v.path) for s in ("train", "val", "test") for v in dm.data[s][2] if str(v.path) not in sources})
            for name in a.sets:
                for stats in a.stats:
                    for true in (False, True) if name in geometric else (name in ("source file", "box shape"),):
                        key = f"{name}{' (true aspect)' if true and name in geometric else ''} | {stats}"
                        results.setdefault(key, []).append(round(score(dm, name, stats, sources, true), 4))
            print(f"deal {deal} fold {k}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = results.get(f"pose block | {a.stats[0]}", next(iter(results.values())))
    print(f"\n{'feature set | statistics':60s} mean   minus pose block ({a.stats[0]}), paired +- SE")
    table = {}
    for key, accs in results.items():
        diff = [x - y for x, y in zip(accs, base)]
        se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
        table[key] = {"folds": accs, "mean": round(statistics.mean(accs), 4), "minus_pose": round(statistics.mean(diff), 4), "se": round(se, 4)}
        print(f"{key:60s} {statistics.mean(accs):.3f}  {statistics.mean(diff):+.3f} +- {se:.3f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"sets": table, "seconds": round(time.perf_counter() - t0, 1), "args": vars(a)}, indent=2))


if __name__ == "__main__":
    run_cli(main)
