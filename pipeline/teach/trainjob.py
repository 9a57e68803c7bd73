"""A training run in a background process: ``python -m pipeline.cli fit`` (what ``train.py`` runs), watched
through a progress file, cancellable.

The teaching app trains this way so that the live stream never waits on training, a crash in training
cannot take the app down, and the run is an ordinary one (``runs/<dataset>/version_N``, its checkpoint
usable by ``infer.py``). The child gets one torch thread: the live stream keeps the other core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from pipeline.data.cache import atomic_write_bytes


class ProgressFile(Callback):
    """Writes the run's progress as JSON after every validation: epoch, the epoch limit, and per epoch the
    validation video top-1 and loss (what the app's progress bar and accuracy chart read)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.history: list[dict] = []

    def _write(self, trainer: L.Trainer, stage: str) -> None:
        body = {"stage": stage, "epoch": trainer.current_epoch, "max_epochs": trainer.max_epochs, "history": self.history}
        atomic_write_bytes(self.path, json.dumps(body).encode())

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "training")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not on_validation_epoch_end: callbacks run that before the module logs the epoch's video metrics
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key, name in (("val/video_top1", "val_top1"), ("val/video_loss", "val_loss")):
            if key in m:
                row[name] = round(float(m[key]), 4)
        self.history.append(row)
        self._write(trainer, "training")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "finishing")


class TrainingJob:
    """One run of ``fit`` with ``args`` in a child process; ``status()`` says how it goes.

    Its console output goes to ``<workdir>/train.log``; the run to ``runs/`` under ``cwd`` (default: this
    process's, as ``train.py``); the best checkpoint is read from the run's summary
    line (``checkpoint: ...``), so the job knows exactly what ``train.py`` would print.
    """

    def __init__(self, args: list[str], workdir: Path, cwd: Path | None = None):
        self.workdir = Path(workdir)
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress = self.workdir / "progress.json"
        self.log = self.workdir / "train.log"
        self.progress.unlink(missing_ok=True)
        self.args = [
            *args,
            "--trainer.callbacks+=pipeline.teach.trainjob.ProgressFile",
            f"--trainer.callbacks.path={self.progress}",
            "--trainer.enable_progress_bar=false",
        ]
        self.started_at = time.monotonic()
        self.ended_at: float | None = None
        self.cancelled = False
        package_root = str(Path(__file__).resolve().parents[2])  # ``-m pipeline.cli`` from any folder, installed or not
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}  # fmt: skip
        with open(self.log, "w") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "fit", *self.args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def cancel(self) -> None:
        """Stop the run (SIGTERM: Lightning stops cleanly, checkpoints so far are kept) and wait for it."""
        with self._lock:
            if self.running:
                self.cancelled = True
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()

    def wait(self, timeout: float | None = None) -> int:
        return self._proc.wait(timeout)

    def _tail(self) -> list[str]:
        try:
            return self.log.read_text(errors="replace").splitlines()[-200:]
        except OSError:
            return []

    def status(self) -> dict:
        """``state``: running, done, failed or cancelled; epoch, max_epochs, history, seconds; the checkpoint
        when done; the error line when failed."""
        try:
            progress = json.loads(self.progress.read_text())
        except (OSError, ValueError):
            progress = {"stage": "starting", "epoch": 0, "max_epochs": None, "history": []}
        code = self._proc.poll()
        if code is not None and self.ended_at is None:
            self.ended_at = time.monotonic()
        out = {**progress, "seconds": round((self.ended_at or time.monotonic()) - self.started_at, 1)}
        if code is None:
            return {**out, "state": "running"}
        lines = self._tail()
        if self.cancelled:
            return {**out, "state": "cancelled"}
        checkpoint = next((ln.split(":", 1)[1].strip() for ln in reversed(lines) if ln.startswith("checkpoint:")), None)
        if code == 0 and checkpoint and checkpoint != "None" and (self.cwd / checkpoint).is_file():
            return {**out, "state": "done", "checkpoint": str(self.cwd / checkpoint)}
        error = next((ln for ln in reversed(lines) if ln.startswith("error:")), None) or (lines[-1] if lines else f"exit status {code}")
        return {**out, "state": "failed", "error": f"{error} (log: {self.log})"}
