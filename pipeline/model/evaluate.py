"""Labels -> report: ``report.json`` and a confusion-matrix PNG beside the evaluated checkpoint.

Metrics themselves are torchmetrics inside the LightningModule (synchronised across processes); this
callback gathers the per-video predictions and writes what a person reads after a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from pipeline.model.classifier import LEVELS
from pipeline.timeline import MIN_DURATION_S, SMOOTH_S, UNKNOWN, first_scored, settle


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=110)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def stream_accuracy(stream_probs: dict[str, list[tuple[int, list[float]]]], predictions: list) -> dict[str, float]:
    """Video top-1 of every trained stream on the test split, and of their mean probabilities (``mean``)."""
    probs = {name: dict(rows) for name, rows in stream_probs.items()}
    labels = {v: y for v, y, _ in predictions if all(v in p for p in probs.values())}  # this process's, under DDP
    if len(probs) < 2 or not labels:
        return {}
    probs["mean"] = {v: np.mean([p[v] for p in probs.values()], 0).tolist() for v in labels}
    return {name: round(float(np.mean([np.argmax(p[v]) == y for v, y in labels.items()])), 6) for name, p in probs.items()}


def rejected(pl_module: L.LightningModule, predictions: list) -> dict:
    """The operating point on the test split: how many of its (known) videos infer.py would call ``unknown``,
    and video top-1 with rejection on (an unknown counts as wrong). Each video is labelled as infer.py
    settles it (the action that lasts longest, the track's first ``warmup_frames`` left out), not by the argmax
    of its mean probabilities as video top-1 is, so on a few videos it is right where the mean is wrong, and
    it can exceed video top-1."""
    threshold = pl_module.rejection.get("threshold", 0.0)
    fps = pl_module.hparams.extractor.get("fps") or 25.0
    names, labels = pl_module.class_names, {v: y for v, y, _ in predictions}
    out = {}
    for v, p, novelty in pl_module.test_frame_probs:
        if v in labels and len(p):
            k = first_scored(len(p), pl_module.hparams.warmup_frames)  # as infer.py: the warm-up left out
            out[v] = settle(names, np.arange(k, len(p)) / fps, p[k:], SMOOTH_S, MIN_DURATION_S, threshold, 0.0, len(p) / fps, novelty=novelty[k:])[1][0]
    if not out:
        return {}
    return {
        "test_videos_unknown": round(sum(lab == UNKNOWN for lab in out.values()) / len(out), 4),
        "test_video_top1_with_rejection": round(sum(out[v] == names[labels[v]] for v in out) / len(out), 4),
    }


class ReportWriter(Callback):
    """After ``test``: report.json (metrics, per-class accuracy, confusion matrices, per-video predictions,
    skipped videos) and confusion_matrix.png: beside the best checkpoint after a fit, in the test run's own
    folder when an existing checkpoint is tested."""

    def __init__(self) -> None:
        self.last_report: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        confusion = {lv: pl_module.confusion[lv].compute().cpu().numpy().astype(int) for lv in LEVELS}
        predictions = pl_module.test_predictions
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, predictions)
            predictions = sorted({p[0]: p for part in gathered for p in part}.values())
        run_dir = Path(trainer.log_dir or ".").resolve()  # a collective under DDP: every rank asks
        if not trainer.is_global_zero:
            return
        ckpt = Path(trainer.ckpt_path) if trainer.ckpt_path else None
        # beside the checkpoint when this run made it (fit, then test); else in this test run's own folder,
        # so testing an old checkpoint on another split never overwrites its report
        out_dir = ckpt.parent if ckpt and ckpt.resolve().is_relative_to(run_dir) else run_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        names = pl_module.class_names
        dm = trainer.datamodule
        videos = dm.videos("test") if dm is not None else []
        metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        report = {
            "checkpoint": str(ckpt) if ckpt else None,
            "classes": names,
            "stream": pl_module.stream,  # the kept stream (pipeline.model.classifier)
            # a video's score: the mean of its frames' probabilities from this frame on (classifier.scored_frames)
            "scored_from_frame": pl_module.hparams.warmup_frames,
            "streams_trained": list(pl_module.streams),
            "frame_probe": {"share": pl_module.model.share, "l2": round(float(pl_module.model.probe_l2), 6)},
            "stream_video_top1": stream_accuracy(pl_module.test_stream_probs, predictions),  # what each would have given
            "rejection": {
                **pl_module.rejection, **rejected(pl_module, predictions),
                **pl_module.novelty.summary(),  # the distance rules: motion, prototypes
            },
            "metrics": metrics,
            "per_class_accuracy": {
                lv: {n: (float(c[i, i] / c[i].sum()) if c[i].sum() else None) for i, n in enumerate(names)} for lv, c in confusion.items()
            },
            "confusion_matrix": {lv: c.tolist() for lv, c in confusion.items()},
            "videos": [
                {
                    "path": str(videos[v].path) if v < len(videos) else v,
                    "label": names[y],
                    "predicted": names[int(np.argmax(p))],
                    "score": round(float(max(p)), 4),
                }
                for v, y, p in predictions
            ],
            "skipped": [{"path": p, "reason": r} for p, r in (getattr(dm, "skipped", None) or [])],
            "truncated": [{"path": p, "frames_read": r, "declared_frames": d} for p, (r, d) in (getattr(dm, "truncated", None) or {}).items()],
        }
        if dm is not None:
            report["split"] = {"dataset": dm.definition.name, "split": dm.split, "fold": dm.fold, "num_folds": dm.num_folds, "split_seed": dm.split_seed, "root": str(dm.root)}
        path = out_dir / "report.json"
        path.write_text(json.dumps(report, indent=2))
        top1 = metrics.get("test/video_top1")
        title = "video level" + (f", top-1 {top1:.1%}" if top1 is not None else "")
        plot_confusion(confusion["video"], names, out_dir / "confusion_matrix.png", title)
        self.last_report = path
