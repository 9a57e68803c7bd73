"""Weizmann leave-one-actor-out: train and test all 9 folds, print per-fold and mean accuracy.

    python benchmarks/weizmann_loao.py [--root ../shared/data/weizmann] [--folds 0 1 ...] [-- extra CLI args]

Each fold is ``train.py fit --config configs/weizmann.yaml --data.fold K`` (test actor K, validation actor
K+1, the other 7 train); features are extracted by the first fold and read from the cache by the rest.
Video-level top-1 is the standard protocol's figure; clip-level is over 32-frame windows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.errors import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/weizmann.yaml")
    p.add_argument("--root", default=None, help="folder of the Weizmann clips (default: the config's)")
    p.add_argument("--folds", type=int, nargs="*", default=list(range(9)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/weizmann_loao.json", help="where to write the summary")
    p.add_argument("extra", nargs="*", help="further train.py arguments, after --")
    a = p.parse_args(argv)
    rows, start = [], time.perf_counter()
    for fold in a.folds:
        t0 = time.perf_counter()
        # each fold in its own process: its result is exactly what `train.py fit --data.fold K` gives alone
        # (in one process, state left by earlier folds, such as thread pools, shifts the numerics slightly)
        args = ["fit", "--config", a.config, f"--data.fold={fold}", f"--seed_everything={a.seed}", "--trainer.enable_progress_bar=false"]
        args += [f"--data.root={a.root}"] if a.root else []
        r = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, *a.extra], cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"fold {fold} failed:\n{r.stderr[-3000:]}")
        report_path = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("report:"))
        report = json.loads((ROOT / report_path).read_text())
        m = report["metrics"]
        test_actor = Path(report["videos"][0]["path"]).name.split("_")[0]
        rows.append({"fold": fold, "test_actor": test_actor, "video_top1": m["test/video_top1"], "clip_top1": m["test/clip_top1"],
                     "seconds": round(time.perf_counter() - t0, 1), "report": report_path})
        print(f"fold {fold} ({test_actor}): video top-1 {m['test/video_top1']:.3f}  clip top-1 {m['test/clip_top1']:.3f}", flush=True)
    total = time.perf_counter() - start
    mean_v = sum(r["video_top1"] for r in rows) / len(rows)
    mean_c = sum(r["clip_top1"] for r in rows) / len(rows)
    print("\nfold  actor    video_top1  clip_top1  seconds")
    for r in rows:
        print(f"{r['fold']:>4}  {r['test_actor']:<8} {r['video_top1']:>10.3f} {r['clip_top1']:>10.3f} {r['seconds']:>8}")
    print(f"mean           {mean_v:>10.3f} {mean_c:>10.3f}   total {total:.0f} s (feature extraction included)")
    summary = {"folds": rows, "mean_video_top1": mean_v, "mean_clip_top1": mean_c, "total_seconds": round(total, 1), "args": vars(a)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    run_cli(run)
