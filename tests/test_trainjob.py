"""Training in a background process: progress per epoch, the checkpoint at the end, cancelling, failing."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import ROOT, TINY_MODEL

from pipeline.inference.predictor import ActionPredictor
from pipeline.teach.trainjob import TrainingJob

TEACH = ROOT / "configs" / "teach.yaml"


def tiny_args(data: Path, cache: Path, epochs: int) -> list[str]:
    return [
        "--config", str(TEACH), "--data.dataset", str(data), "--data.cache_dir", str(cache),
        f"--data.extractor.weights={TINY_MODEL}", "--data.extractor.imgsz=64", f"--trainer.max_epochs={epochs}",
        "--model.hidden_size=8", "--model.proj_dim=8",
    ]  # fmt: skip


def test_a_run_reports_each_epoch_and_ends_with_a_usable_checkpoint_without_a_test_split(tiny_dataset, tmp_path):
    job = TrainingJob(tiny_args(tiny_dataset, tmp_path / "cache", 3), tmp_path / "job", cwd=tmp_path)
    assert job.status()["state"] == "running"
    job.wait(timeout=600)
    s = job.status()
    assert s["state"] == "done", (tmp_path / "job" / "train.log").read_text()[-3000:]
    assert s["max_epochs"] == 3 and [h["epoch"] for h in s["history"]] == [1, 2, 3]
    assert all(0 <= h["val_top1"] <= 1 and h["val_loss"] > 0 for h in s["history"])
    ckpt = Path(s["checkpoint"])
    assert ckpt.is_file() and tmp_path in ckpt.parents  # runs/ under the job's folder, as train.py would put it
    log = (tmp_path / "job" / "train.log").read_text()
    assert "test:         none (no test split)" in log
    p = ActionPredictor(ckpt, weights=TINY_MODEL)
    assert p.class_names == ["walk", "wave"] and p.novelty.prototypes is not None  # "unknown", fitted on the validation clips


def test_cancel_stops_the_run_and_a_failing_run_says_why(tiny_dataset, tmp_path):
    job = TrainingJob(tiny_args(tiny_dataset, tmp_path / "cache", 100000), tmp_path / "a", cwd=tmp_path)
    for _ in range(1200):  # until it trains
        if json.loads((tmp_path / "a" / "progress.json").read_text() or "{}").get("history") if (tmp_path / "a" / "progress.json").exists() else False:
            break
        time.sleep(0.1)
    job.cancel()
    assert not job.running and job.status()["state"] == "cancelled"
    bad = TrainingJob([*tiny_args(tiny_dataset, tmp_path / "cache", 1), "--data.dataset", str(tmp_path / "nowhere")], tmp_path / "b", cwd=tmp_path)
    bad.wait(timeout=600)
    s = bad.status()
    assert s["state"] == "failed" and "nowhere" in s["error"] and s["error"].startswith("error:")
