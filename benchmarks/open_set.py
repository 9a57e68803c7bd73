"""How often is an action nobody trained named as a known one? Leave-classes-out on Weizmann.

    python benchmarks/open_set.py --root ../shared/data/weizmann [--pairs 5] [--folds 0 3 6] --out runs/open_set.json

For each held-out pair of classes (``--pairs N`` drawn at random with a fixed seed, or named, e.g.
``--pair run skip --pair wave1 wave2``) and each leave-one-actor-out fold, ``train.py fit`` trains on the
other 8 classes (``--data.exclude_classes``), which also fits the checkpoint's rejection threshold on the
validation actor. Then the test actor's clips of all 10 classes are labelled as ``infer.py`` labels a
finished video (per-frame probabilities, smoothed without delay, frames under the threshold ``unknown``,
the label covering the most time), from the cached features. Printed, as mean +- sd over the runs:

* known clips: video top-1 with rejection off and on (an ``unknown`` counts as wrong) and the drop;
* unknown clips: the share labelled ``unknown``;
* AUROC of the rejection score (the video's mean smoothed top probability; and, for comparison, the mean
  energy, logsumexp of the logits, and the Mahalanobis distance of the GRU's output to the nearest class
  mean of the training frames), known against unknown clips;
* the same operating point for other quantiles of the validation frames (``--quantiles``), so the
  default can be chosen by measurement.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.datamodule import ActionDataModule  # noqa: E402
from pipeline.data.features import ExtractorConfig  # noqa: E402
from pipeline.data.videoset import DatasetDefinition  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.inference.timeline import MIN_DURATION_S, SMOOTH_S, UNKNOWN, settle, zero_phase  # noqa: E402
from pipeline.model.checkpoint import read_checkpoint  # noqa: E402
from pipeline.model.classifier import ActionClassifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def auroc(pos: list[float], neg: list[float]) -> float:
    """P(a known clip scores above an unknown one), ties counted half."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def train(a: argparse.Namespace, pair: tuple[str, str], fold: int) -> Path:
    args = [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", a.config, f"--data.root={a.root}", f"--data.fold={fold}",
        f"--data.exclude_classes=[{pair[0]},{pair[1]}]", f"--seed_everything={a.seed}", "--trainer.enable_progress_bar=false", *a.extra,
    ]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{pair} fold {fold}: train.py failed:\n{r.stderr[-2000:]}")
    return Path(next(ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines() if ln.startswith("checkpoint:")))


def per_video(model: ActionClassifier, seqs: list[torch.Tensor], fps: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each sequence's per-frame probabilities, logits and GRU outputs, as infer.py's step-by-step GRU gives them."""
    out, rnn = [], model.model
    with torch.no_grad():
        for x in seqs:
            h, _ = rnn.rnn(rnn.embed(x[None].float()))
            logits = rnn.head(h)[0]
            out.append((logits.softmax(-1).numpy(), logits.numpy(), h[0].numpy()))
    return out


class Mahalanobis:
    """For comparison with the top probability: distance of a frame's GRU output to the nearest class mean
    of the training frames (shared covariance), negated so that higher means more known."""

    def __init__(self, outputs: list[np.ndarray], labels: list[int], skip: int = 8):
        h = np.concatenate([o[skip:] for o in outputs])
        y = np.concatenate([[lab] * len(o[skip:]) for o, lab in zip(outputs, labels)])
        self.mu = np.stack([h[y == c].mean(0) for c in sorted(set(y.tolist()))])
        d = h - self.mu[np.searchsorted(sorted(set(y.tolist())), y)]
        self.precision = np.linalg.inv(d.T @ d / len(d) + 1e-3 * np.eye(h.shape[1]))

    def __call__(self, h: np.ndarray) -> np.ndarray:
        d = h[:, None, :] - self.mu[None]
        return -np.einsum("tcd,de,tce->tc", d, self.precision, d).min(1)


def evaluate(a: argparse.Namespace, ckpt_path: Path, pair: tuple[str, str], fold: int) -> dict:
    ckpt = read_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    params = inspect.signature(ActionClassifier).parameters
    model = ActionClassifier(**{k: v for k, v in hp.items() if k in params})
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    names, fps = model.class_names, hp["extractor"].get("fps") or 25.0
    dm = ActionDataModule(dataset="weizmann", root=a.root, split="group", fold=fold, extractor=ExtractorConfig.from_record(hp["extractor"]))
    dm.setup("fit")
    dm.setup("test")
    all_names = dm.class_names
    # validation frames of the known classes: the calibration set, for the other quantiles
    val = [(x, all_names[y]) for x, y in zip(*dm.data["val"][:2]) if all_names[y] not in pair]
    val_out = per_video(model, [x for x, _ in val], fps)
    val_top = np.concatenate([zero_phase(np.arange(len(p)) / fps, p, SMOOTH_S).max(1) for p, _, _ in val_out])
    train = [(x, names.index(all_names[y])) for x, y in zip(*dm.data["train"][:2]) if all_names[y] not in pair]
    maha = Mahalanobis([h for _, _, h in per_video(model, [x for x, _ in train], fps)], [y for _, y in train])
    val_maha = np.concatenate([maha(h) for _, _, h in val_out])
    maha_thresholds = {q: float(np.quantile(val_maha, q)) for q in (0.05, 0.1)}
    thresholds = {q: float(np.quantile(val_top, q)) for q in a.quantiles}
    thresholds[model.hparams.reject_quantile] = model.rejection["threshold"]
    clips = []
    seqs, labels, videos = dm.data["test"]
    for (p, logits, h), y, v in zip(per_video(model, seqs, fps), labels, videos):
        t = np.arange(len(p)) / fps
        truth = all_names[y]
        smoothed_top = zero_phase(t, p, SMOOTH_S).max(1)
        labelled = {q: settle(names, t, p, SMOOTH_S, MIN_DURATION_S, th, 0.0, len(p) / fps)[1][0] for q, th in thresholds.items()}
        off = settle(names, t, p, SMOOTH_S, MIN_DURATION_S, 0.0, 0.0, len(p) / fps)[1][0]
        clips.append({
            "video": v.path.name, "truth": truth, "known": truth not in pair, "off": off, "on": labelled,
            "score": float(smoothed_top.mean()), "energy": float(np.log(np.exp(logits).sum(1)).mean()), "maha": float(maha(h).mean()),
            "maha_unknown": {str(q): bool(np.mean(maha(h) < th) > 0.5) for q, th in maha_thresholds.items()},
        })  # fmt: skip
    known = [c for c in clips if c["known"]]
    unknown = [c for c in clips if not c["known"]]
    q0 = model.hparams.reject_quantile
    points = {
        str(q): {
            "threshold": round(th, 4),
            "known_top1_on": sum(c["on"][q] == c["truth"] for c in known) / len(known),
            "unknown_rejected": sum(c["on"][q] == UNKNOWN for c in unknown) / max(len(unknown), 1),
        }
        for q, th in sorted(thresholds.items())
    }  # fmt: skip
    return {
        "pair": list(pair), "fold": fold, "test": videos[0].group if videos else "", "checkpoint": str(ckpt_path),
        "rejection": model.rejection, "known_top1_off": sum(c["off"] == c["truth"] for c in known) / len(known),
        "known_top1_on": points[str(q0)]["known_top1_on"], "unknown_rejected": points[str(q0)]["unknown_rejected"],
        "auroc": auroc([c["score"] for c in known], [c["score"] for c in unknown]),
        "auroc_energy": auroc([c["energy"] for c in known], [c["energy"] for c in unknown]),
        "auroc_maha": auroc([c["maha"] for c in known], [c["maha"] for c in unknown]),
        "maha_points": {
            q: {"known_rejected": float(np.mean([c["maha_unknown"][q] for c in known])), "unknown_rejected": float(np.mean([c["maha_unknown"][q] for c in unknown]))}
            for q in ("0.05", "0.1")
        },
        "operating_points": points, "clips": clips,
    }  # fmt: skip


def mean_sd(values: list[float]) -> str:
    values = [v for v in values if v == v]
    return f"{statistics.fmean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def run(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/weizmann.yaml"))
    p.add_argument("--root", default="../shared/data/weizmann", help="the Weizmann clips")
    p.add_argument("--pairs", type=int, default=5, help="how many held-out class pairs, drawn at random (seed 0)")
    p.add_argument("--pair", nargs=2, action="append", help="a held-out pair by name (repeatable); overrides --pairs")
    p.add_argument("--folds", type=int, nargs="*", default=[0, 3, 6], help="leave-one-actor-out folds (test actors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantiles", type=float, nargs="*", default=[0.02, 0.05, 0.1, 0.2], help="other operating points to print")
    p.add_argument("--out", default="runs/open_set.json")
    p.add_argument("extra", nargs="*", help="further train.py arguments, after --")
    a = p.parse_args(argv)
    a.root = str(Path(a.root).resolve())
    names = DatasetDefinition.load("weizmann").classes
    pairs = [tuple(x) for x in a.pair] if a.pair else random.Random(0).sample(list(itertools.combinations(names, 2)), a.pairs)
    rows, start = [], time.perf_counter()
    for pair in pairs:
        for fold in a.folds:
            r = evaluate(a, train(a, pair, fold), pair, fold)
            rows.append(r)
            print(f"held out {pair[0]}+{pair[1]}, fold {fold} ({r['test']}): known top-1 {r['known_top1_off']:.3f} -> {r['known_top1_on']:.3f} "
                  f"with rejection; unknown labelled unknown {r['unknown_rejected']:.2f}; AUROC {r['auroc']:.3f} (energy {r['auroc_energy']:.3f}); "
                  f"Mahalanobis {r['auroc_maha']:.3f}; threshold {r['rejection']['threshold']:.3f}", flush=True)  # fmt: skip
    print(f"\n{len(rows)} runs ({len(pairs)} pairs x {len(a.folds)} folds), mean +- sd over runs:")
    print(f"  known clips, video top-1: rejection off {mean_sd([r['known_top1_off'] for r in rows])}, on {mean_sd([r['known_top1_on'] for r in rows])}, "
          f"drop {mean_sd([r['known_top1_off'] - r['known_top1_on'] for r in rows])}")  # fmt: skip
    print(f"  unknown clips labelled unknown: {mean_sd([r['unknown_rejected'] for r in rows])}")
    print(f"  AUROC: top probability {mean_sd([r['auroc'] for r in rows])}, energy {mean_sd([r['auroc_energy'] for r in rows])}, "
          f"Mahalanobis {mean_sd([r['auroc_maha'] for r in rows])}")  # fmt: skip
    for q in ("0.05", "0.1"):
        print(f"  Mahalanobis at quantile {q} (a clip unknown when most frames are under): known clips rejected "
              f"{mean_sd([r['maha_points'][q]['known_rejected'] for r in rows])}, unknown rejected {mean_sd([r['maha_points'][q]['unknown_rejected'] for r in rows])}")  # fmt: skip
    print("  other operating points (quantile of the validation frames read as unknown):")
    for q in sorted({q for r in rows for q in r["operating_points"]}, key=float):
        pts = [r["operating_points"][q] for r in rows if q in r["operating_points"]]
        drop = [r["known_top1_off"] - pt["known_top1_on"] for r, pt in zip(rows, pts)]
        print(f"    {float(q):.2f}: known top-1 drop {mean_sd(drop)}, unknown labelled unknown {mean_sd([pt['unknown_rejected'] for pt in pts])}")
    total = time.perf_counter() - start
    print(f"total {total:.0f} s")
    summary = {"runs": rows, "args": vars(a), "total_seconds": round(total, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    run_cli(run)
