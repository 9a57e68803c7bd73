"""The bar the GRU must clear: a model that ignores time, on the same folds and the same cached features.

    python benchmarks/time_blind_baseline.py --dataset ../shared/data/pushfit --split stratified --layers 16 19 22
    python benchmarks/time_blind_baseline.py --root ../shared/data/weizmann              # leave-one-actor-out
    python benchmarks/time_blind_baseline.py ... --stats mean --part pooled --out runs/baseline_pushfit.json
    python benchmarks/time_blind_baseline.py ... --window 16    # blind within 16-frame windows, averaged
    python benchmarks/time_blind_baseline.py ... --pool global  # the scene instead of the person's box

Each video becomes one vector: the statistics over the frames its subject is in view (``--stats mean``, or
``mean_std``: mean and spread), of the whole feature vector or a part of it (``--part``: ``pooled``
appearance, ``pose`` block, ``all``); frame order plays no part. With ``--window N`` each video is cut into
windows of N frames, each window a vector, and a video's scores are the mean of its windows' probabilities
(is it the length of context that a model lacks?). A multinomial logistic regression on the standardised
vectors, its L2 weight chosen on the fold's validation split (ties: the stronger), refitted on training and
validation, is scored on the test split. Folds as ``benchmarks/cross_validate.py`` makes
them (``train.py``'s data settings from ``--config``), so the figures compare one to one. Features are
read from the cache (extracted first when missing). Printed and written to ``--out``: per fold and mean +-
sd video top-1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.cross_validate import fold_count  # noqa: E402
from pipeline.data.datamodule import ActionDataModule  # noqa: E402
from pipeline.data.features import POSE_DIM, ExtractorConfig  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.model.frame_probe import L2, fit_linear  # noqa: E402
from pipeline.options import check_range  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def video_vector(x: torch.Tensor, stats: str, part: str) -> torch.Tensor:
    """A video's features (T, D) -> one vector, blind to frame order: statistics over the subject's frames."""
    seen = x[x[:, -POSE_DIM] > 0] if (x[:, -POSE_DIM] > 0).sum() >= 2 else x
    seen = seen.float()[:, {"pooled": slice(0, -POSE_DIM), "pose": slice(-POSE_DIM, None), "all": slice(None)}[part]]
    return torch.cat([seen.mean(0), seen.std(0)]) if stats == "mean_std" else seen.mean(0)


def windows(x: torch.Tensor, window: int | None) -> list[torch.Tensor]:
    """A video's frames -> back-to-back windows of ``window`` frames (the whole video: one)."""
    return [x[s : s + window] for s in range(0, max(len(x) - window, 0) + 1, window)] if window else [x]


def vectors(seqs: list[torch.Tensor], labels, a: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Videos -> one vector per window (N, F), its label (N,) and its video (N,)."""
    rows = [(video_vector(w, a.stats, a.part), int(y), v) for v, (x, y) in enumerate(zip(seqs, labels)) for w in windows(x, a.window)]
    return torch.stack([r[0] for r in rows]).nan_to_num(), torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows])


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float):
    """Multinomial logistic regression (L-BFGS) on standardised inputs -> a function giving class scores."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-4)
    w, b = fit_linear((x - mu) / sd, y, classes, l2)  # the frame probe's fit (pipeline.model.frame_probe)
    return lambda q: ((q - mu) / sd) @ w.T + b


def accuracy(model, x: torch.Tensor, y: torch.Tensor, video: torch.Tensor) -> float:
    """Video top-1: each video's windows' probabilities averaged."""
    probs = torch.zeros(int(video.max()) + 1, model(x[:1]).shape[1]).index_add_(0, video, model(x).softmax(1))
    truth = torch.zeros(len(probs), dtype=torch.long).index_copy_(0, video, y)
    return float((probs.argmax(1) == truth).float().mean())


def score_fold(dm: ActionDataModule, stats: str = "mean", part: str = "pose", window: int | None = None) -> dict:
    """The time-blind model on one fold of ``dm``: its L2 weight chosen on validation, then refitted on train
    and validation and scored on test (video top-1). Features from the cache, extracted first if missing."""
    dm.prepare_data()  # extracts what the cache lacks (the first fold, on a fresh machine)
    dm.setup("fit")
    dm.setup("test")
    a = argparse.Namespace(stats=stats, part=part, window=window)
    (xt, yt, _), (xv, yv, vv), (xs, ys, vs) = (vectors(dm.data[s][0], dm.data[s][1], a) for s in ("train", "val", "test"))
    classes = len(dm.class_names)
    l2 = max(L2, key=lambda c: (accuracy(fit(xt, yt, classes, c), xv, yv, vv), c)) if len(yv) else L2[1]
    top1 = accuracy(fit(torch.cat([xt, xv]), torch.cat([yt, yv]), classes, l2), xs, ys, vs)
    return {"video_top1": round(top1, 4), "l2": l2, "test_videos": len(dm.data["test"][0]), "val_videos": len(dm.data["val"][0])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "weizmann.yaml"))
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--split", choices=("group", "scene", "stratified"))
    p.add_argument("--split-seed", type=int, help="--data.split_seed: the deal of the scene or stratified folds")
    p.add_argument("--num-folds", type=int)
    p.add_argument("--cache-dir", help="--data.cache_dir: where the features are cached (default: the dataset's)")
    p.add_argument("--layers", type=int, nargs="*", help="pooled backbone layers (default: the config's)")
    p.add_argument("--pool", choices=("person", "global"), help="where the layers are pooled (default: the config's)")
    p.add_argument("--stats", choices=("mean", "mean_std"), default="mean")
    p.add_argument("--part", choices=("all", "pooled", "pose"), default="all")
    p.add_argument("--window", type=int, help="frames per window (default: the whole video)")
    p.add_argument("--out")
    a = p.parse_args()
    check_range("--window", a.window, 1, 1_000_000)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = yaml.safe_load(Path(a.config).read_text()).get("data", {})
    extractor = dict(data.pop("extractor", {}))
    if a.layers is not None:
        extractor["layers"] = a.layers
    if a.pool is not None:
        extractor["pool"] = a.pool
    for key, value in (("dataset", a.dataset), ("root", a.root), ("split", a.split), ("num_folds", a.num_folds), ("cache_dir", a.cache_dir), ("split_seed", a.split_seed)):
        if value is not None:
            data[key] = value
    if a.part == "pooled" and not extractor.get("layers"):
        sys.exit("--part pooled needs pooled features: pass --layers (e.g. 16 19 22)")
    t0, folds = time.perf_counter(), []
    for k in range(fold_count(a.config, a.dataset, a.root, a.split, a.num_folds)):
        dm = ActionDataModule(**{**data, "fold": k}, extractor=ExtractorConfig(**extractor))
        folds.append({"fold": k, **score_fold(dm, a.stats, a.part, a.window)})
        r = folds[-1]
        print(f"fold {k}: video top-1 {r['video_top1']:.3f} ({r['test_videos']} videos; L2 {r['l2']:g} chosen on {r['val_videos']} validation videos)", flush=True)
    accs = [f["video_top1"] for f in folds]
    summary = {"mean_video_top1": round(statistics.mean(accs), 4), "sd_over_folds": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0}
    print(f"time-blind baseline ({a.stats} of {a.part}{f', {a.window}-frame windows' if a.window else ''}): video top-1 {summary['mean_video_top1']:.3f} +- {summary['sd_over_folds']:.3f} over {len(folds)} folds")
    if a.out:
        doc = {"folds": folds, **summary, "seconds": round(time.perf_counter() - t0, 1), "args": vars(a)}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    run_cli(main)
