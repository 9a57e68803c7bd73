"""Cross-validation of any dataset: train and test every fold (and seed), print per-fold and mean +- sd.

    python benchmarks/cross_validate.py --config configs/weizmann.yaml --root ../shared/data/weizmann
    python benchmarks/cross_validate.py --config configs/weizmann.yaml --dataset ../shared/data/pushfit \\
        --split stratified --seeds 0 1 2 --out runs/cv_pushfit.json
    python benchmarks/cross_validate.py --dataset ../shared/data/pushfit --split scene --split-seeds 0 1 2 \
        --out runs/cv_pushfit_scene.json -- --data.cache_dir=datasets/cache/pushfit   # the honest protocol
    python benchmarks/cross_validate.py ... -- --model.hidden_size 128    # further train.py arguments

Each fold is ``train.py fit --config CONFIG --data.fold K --seed_everything S`` in its own process, so its
result is exactly what that command gives alone. Folds: ``group`` splits one per group (leave-one-actor-
out on Weizmann: test actor K, validation actor K+1) or ``--num-folds``; ``stratified`` splits
``--num-folds`` (default 5) class-balanced folds, validation carved from the other folds; ``scene`` deals
the scenes the clips show (``pipeline.data.scenes``) into ``--num-folds`` (default 5) folds balanced by
class, validation the next fold, so no room is in both train and test; ``--split-seeds`` redraws the deal
(stratified and scene). Every video is tested exactly once per seed and deal. Features are extracted by the
first fold and read from the cache by the rest.

Beside every fold, on the identical videos and cached features, the time-blind baselines
(``benchmarks/time_blind_baseline.py``: the mean of the pose block, and of every feature) are scored, and
the model's gain over each is printed as the paired difference per fold (the model's mean over seeds minus
the baseline) with its mean +- standard error: a gain the baseline also gets is not the GRU's.

Printed and written to ``--out`` (JSON): per fold video-level top-1 and mean-class accuracy and
clip-level top-1 (32-frame windows), video top-1 with the checkpoint's rejection on (an ``unknown``
counts as wrong) and the share of test videos called ``unknown``; per seed the mean over folds and the standard deviation over folds;
over seeds the mean of the seed means and their standard deviation; the wall time of the whole protocol,
extraction included where the cache lacked features.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from pipeline.data.videoset import DatasetDefinition, DatasetError, list_videos  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("video_top1", "video_mean_class", "clip_top1", "video_top1_rejecting", "videos_unknown")


def fold_count(config: str, dataset: str | None, root: str | None, split: str | None, num_folds: int | None) -> int:
    """How many folds ``train.py`` has for these settings (the config's where not given)."""
    data = yaml.safe_load(Path(config).read_text()).get("data", {})
    split = split or data.get("split", "group")
    num_folds = num_folds or data.get("num_folds")
    if num_folds:
        return num_folds
    if split in ("stratified", "scene"):
        return 5
    if split != "group":
        raise DatasetError(f"split '{split}' has no folds to cross-validate: use --split group, scene or stratified")
    definition = DatasetDefinition.load(dataset or data.get("dataset", "weizmann"))
    folder = Path(root or data.get("root") or definition.default_root())
    if not folder.is_dir():
        raise DatasetError(f"data root {folder} does not exist: pass --root")
    return len({v.group for v in list_videos(definition, folder)[0]})


def train_fold(a: argparse.Namespace, fold: int, seed: int, split_seed: int = 0) -> dict:
    args = ["fit", "--config", a.config, f"--data.fold={fold}", f"--seed_everything={seed}", "--trainer.enable_progress_bar=false"]
    args += [f"--data.split_seed={split_seed}"] if split_seed else []
    for flag, value in (("dataset", a.dataset), ("root", a.root), ("split", a.split), ("num_folds", a.num_folds)):
        args += [f"--data.{flag}={value}"] if value is not None else []
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, *a.extra], capture_output=True, text=True)  # runs/ where called
    if r.returncode:
        sys.exit(f"fold {fold} (seed {seed}) failed:\n{r.stderr[-3000:]}")
    report_path = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("report:"))
    report = json.loads(Path(report_path).read_text())
    m = report["metrics"]
    names = sorted({Path(v["path"]).name.split("_")[0] for v in report["videos"]})
    return {
        "fold": fold, "seed": seed, "split_seed": split_seed, "test": names[0] if len(names) == 1 else f"{len(report['videos'])} videos",
        "video_top1": m["test/video_top1"], "video_mean_class": m["test/video_mean_class"], "clip_top1": m["test/clip_top1"],
        # with the checkpoint's rejection on, as infer.py labels the videos: an "unknown" counts as wrong
        "video_top1_rejecting": report["rejection"].get("test_video_top1_with_rejection", m["test/video_top1"]),
        "videos_unknown": report["rejection"].get("test_videos_unknown", 0.0),
        "seconds": round(time.perf_counter() - t0, 1), "report": str(Path(report_path).resolve()),  # replayable from anywhere
    }  # fmt: skip


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def data_settings(a: argparse.Namespace) -> tuple[dict, dict]:
    """``train.py``'s data settings for these arguments (the config's, then the options, then ``--data.*``
    among the extra arguments): the datamodule's keywords and the extractor's, for the baseline's folds."""
    data = yaml.safe_load(Path(a.config).read_text()).get("data", {})
    extractor = dict(data.pop("extractor", {}) or {})
    for key, value in (("dataset", a.dataset), ("root", a.root), ("split", a.split), ("num_folds", a.num_folds)):
        if value is not None:
            data[key] = value
    extra, i = list(a.extra), 0
    while i < len(extra):
        arg = extra[i]
        if arg.startswith("--data.") and "=" in arg:
            key, value = arg[len("--data.") :].split("=", 1)
        elif arg.startswith("--data.") and i + 1 < len(extra):
            key, value, i = arg[len("--data.") :], extra[i + 1], i + 1
        else:
            i += 1
            continue
        i += 1
        target = extractor if key.startswith("extractor.") else data
        target[key.removeprefix("extractor.")] = yaml.safe_load(value)
    return data, extractor


def baseline(a: argparse.Namespace, fold: int, split_seed: int) -> dict:
    """The time-blind models (mean of the pose block; mean of every feature) on this fold's videos and
    cached features: ``benchmarks/time_blind_baseline.py``."""
    from benchmarks.time_blind_baseline import score_fold
    from pipeline.data.datamodule import ActionDataModule
    from pipeline.data.features import ExtractorConfig

    data, extractor = data_settings(a)
    dm = ActionDataModule(**{**data, "fold": fold, "split_seed": split_seed}, extractor=ExtractorConfig(**extractor))  # one load for both
    return {f"time_blind_{part}": score_fold(dm, "mean", part)["video_top1"] for part in ("pose", "all")}


def paired(rows: list[dict], key: str) -> tuple[float, float, int]:
    """Mean and standard error over the folds (each deal's) of the model's video top-1 (mean over seeds)
    minus ``key``'s on the same fold."""
    pairs: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        pairs.setdefault((r["split_seed"], r["fold"]), []).append(r)
    diffs = [statistics.fmean(r["video_top1"] for r in rs) - rs[0][key] for rs in pairs.values()]
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), sd / len(diffs) ** 0.5, len(diffs)


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/weizmann.yaml")
    p.add_argument("--dataset", help="--data.dataset: a definition name, a folder of class folders, a CSV")
    p.add_argument("--root", help="--data.root: the folder of the videos")
    p.add_argument("--split", choices=("group", "scene", "stratified"), help="--data.split (default: the config's)")
    p.add_argument("--split-seeds", type=int, nargs="*", default=[0], help="--data.split_seed: deals of the scene or stratified folds")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the time-blind models on the same folds")
    p.add_argument("--num-folds", type=int, help="--data.num_folds (default: one per group; stratified 5)")
    p.add_argument("--folds", type=int, nargs="*", help="only these folds (default: all)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--out", default="runs/cross_validation.json", help="where to write the summary")
    p.add_argument("extra", nargs="*", help="further train.py arguments, after --")
    a = p.parse_args(argv)
    for name in ("config", "dataset", "root"):  # paths as the caller typed them, from the caller's folder
        value = getattr(a, name)
        if value and Path(value).exists():
            setattr(a, name, str(Path(value).resolve()))
    if not Path(a.config).is_file() and (ROOT / a.config).is_file():  # the repo's own config, from anywhere
        a.config = str(ROOT / a.config)
    folds = a.folds if a.folds else list(range(fold_count(a.config, a.dataset, a.root, a.split, a.num_folds)))
    rows, start = [], time.perf_counter()
    for split_seed in a.split_seeds:
        for fold in folds:
            blind = baseline(a, fold, split_seed) if a.baseline else {}
            for seed in a.seeds:
                rows.append({**train_fold(a, fold, seed, split_seed), **blind})
                r = rows[-1]
                print(f"deal {split_seed} seed {seed} fold {fold} ({r['test']}): video top-1 {r['video_top1']:.3f}  mean-class {r['video_mean_class']:.3f}  "
                      f"clip top-1 {r['clip_top1']:.3f}  with rejection {r['video_top1_rejecting']:.3f} ({r['videos_unknown']:.0%} unknown)  "
                      + "".join(f" {k.replace('_', ' ')} {v:.3f}" for k, v in blind.items()) + f"  {r['seconds']:.0f} s", flush=True)  # fmt: skip
    total = time.perf_counter() - start
    per_seed = {}
    print(f"\n{'seed':>4}  {'folds':>5}  " + "  ".join(f"{m:>22}" for m in METRICS) + "   (mean +- sd over folds)")
    for seed in a.seeds:
        sel = [r for r in rows if r["seed"] == seed]
        per_seed[seed] = {m: mean_sd([r[m] for r in sel]) for m in METRICS}
        print(f"{seed:>4}  {len(sel):>5}  " + "  ".join(f"{per_seed[seed][m][0]:>14.3f} +- {per_seed[seed][m][1]:.3f}" for m in METRICS))
    overall = {m: mean_sd([per_seed[s][m][0] for s in a.seeds]) for m in METRICS}
    print(f"{'all':>4}  {len(rows):>5}  " + "  ".join(f"{overall[m][0]:>14.3f} +- {overall[m][1]:.3f}" for m in METRICS)
          + f"   (mean +- sd over {len(a.seeds)} seed(s))")  # fmt: skip
    differences = {}
    for key in ("time_blind_pose", "time_blind_all") if a.baseline else ():
        mean, se, n = paired(rows, key)
        blind = statistics.fmean(r[key] for r in rows)
        differences[key] = {"baseline_mean": round(blind, 4), "difference_mean": round(mean, 4), "difference_se": round(se, 4), "pairs": n}
        print(f"{key.replace('_', ' ')}: {blind:.3f}; the model minus it, paired over {n} folds: {mean:+.3f} +- {se:.3f} (standard error)")
    print(f"total {total:.0f} s for {len(rows)} runs (feature extraction included where the cache lacked features)")
    summary = {
        "folds": rows, "per_seed": {str(s): {m: {"mean": v[0], "sd_over_folds": v[1]} for m, v in d.items()} for s, d in per_seed.items()},
        "mean": {m: {"mean": v[0], "sd_over_seeds": v[1]} for m, v in overall.items()},
        "mean_video_top1": overall["video_top1"][0], "against_time_blind": differences, "total_seconds": round(total, 1), "args": vars(a),
        "protocol": {"split": a.split or yaml.safe_load(Path(a.config).read_text()).get("data", {}).get("split", "group"),
                     "folds": len(folds), "deals": a.split_seeds, "seeds": a.seeds},
    }  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run_cli(run)
