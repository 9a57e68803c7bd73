"""Does accuracy carry over from ``train.py test`` to ``infer.py``? Same checkpoint, same held-out clips.

    python benchmarks/infer_accuracy.py --checkpoint runs/weizmann/version_0/checkpoints/best-....ckpt

Reads the ``report.json`` that ``train.py`` wrote beside the checkpoint (its test split's videos and
predictions), runs ``infer.py`` on those video files, and prints both video-level accuracies and how many
videos got the same label. ``train.py`` classifies cached features; ``infer.py`` decodes and extracts again
and steps the GRU frame by frame, so this checks the whole streaming path against the training one.
With no checkpoint given, trains fold 0 first (``train.py fit --config CONFIG``, default ``configs/weizmann.yaml``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a best checkpoint with report.json beside it")
    p.add_argument("--root", default="../shared/data/weizmann", help="data root when training fold 0 first")
    p.add_argument("--config", default="configs/weizmann.yaml", help="train.py config when training fold 0 first")
    a = p.parse_args(argv)
    if a.checkpoint is None:
        r = subprocess.run([sys.executable, "train.py", "fit", "--config", a.config, f"--data.root={a.root}",
                            "--trainer.enable_progress_bar=false"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        if r.returncode:
            sys.exit(r.stderr[-2000:])
        a.checkpoint = next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("checkpoint:"))
    report = json.loads((Path(a.checkpoint).parent / "report.json").read_text())
    videos = report["videos"]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "infer.py", *(v["path"] for v in videos), "-c", a.checkpoint, "--output", out, "--quiet"]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr[-2000:])
        rows = []
        for v in videos:
            doc = json.loads((Path(out) / f"{Path(v['path']).stem}.json").read_text())
            # the mean probability of the class train.py picked: the same quantity on both sides
            probs = doc["video"]["probs"]
            rows.append((Path(v["path"]).name, v["label"], v["predicted"], doc["video"]["label"], v["score"], probs[v["predicted"]], max(probs, key=probs.get)))
    print(f"{'video':<22} {'label':<7} {'train.py test':<14} {'infer.py':<9} score(test/infer)")
    for name, y, t, i, st, si, _ in rows:
        print(f"{name:<22} {y:<7} {t:<14} {i:<9} {st:.3f} / {si:.3f}")
    acc_test = sum(y == t for _, y, t, *_ in rows) / len(rows)
    acc_infer = sum(y == i for _, y, _, i, *_ in rows) / len(rows)
    # infer.py's label is the action whose segments last longest; the top of its mean probabilities (the
    # video's "probs") is train.py's rule on infer.py's frames: what the label rule alone costs or gains
    acc_mean = sum(y == m for _, y, *_, m in rows) / len(rows)
    mean_only = sum(y == m != i for _, y, _, i, *_, m in rows)  # videos the mean's top names right and the label does not
    label_only = sum(y == i != m for _, y, _, i, *_, m in rows)
    withheld = [(y, m) for _, y, _, i, *_, m in rows if i in ("unknown", "nobody")]  # the rules' rejections (train.py test has none)
    same = sum(t == i for _, _, t, i, *_ in rows)
    max_diff = max(abs(st - si) for *_, st, si, _ in rows)
    print(f"\nvideo top-1: train.py test {acc_test:.3f}, infer.py {acc_infer:.3f} (its mean probabilities' top {acc_mean:.3f}: "
          f"right where the label is not {mean_only}, the reverse {label_only}; "
          f"unknown or nobody on {len(withheld)}, of which the mean's top is right on {sum(y == m for y, m in withheld)}); "
          f"same label on {same}/{len(rows)} videos; max score difference {max_diff:.4f}  (split: {report.get('split')})")  # fmt: skip
    return 0 if acc_test == acc_infer else 1


if __name__ == "__main__":
    sys.exit(main())
