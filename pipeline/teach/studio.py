"""The teaching app's live loop: a source, its skeletons (or, once trained, everyone's action), recordings
into the examples, and training runs in the background whose model is swapped in when it is ready.

One thread reads the newest frame and draws it; the capture thread feeds the recorder every frame; a worker
caches the features of each finished clip; training is a child process (``pipeline.teach.trainjob``). Everything
that lasts is on disk (clips, cache, runs): the browser page holds nothing, so closing it loses nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.data.features import ExtractorConfig, FeatureExtractor
from pipeline.inference.annotate import Overlay, Person, draw
from pipeline.inference.predictor import ActionPredictor
from pipeline.live.capture import LatestFrameCapture
from pipeline.live.loop import LiveLabels
from pipeline.live.serve import FrameBus
from pipeline.model.checkpoint import CheckpointError
from pipeline.teach.examples import ExampleError, Examples
from pipeline.teach.recording import Recorder
from pipeline.teach.trainjob import TrainingJob

ERROR_SHOW_S = 5.0  # how long the stream's status line says why a frame could not be labelled


def unknown_rules(predictor: ActionPredictor) -> str:
    """What the model calls ``unknown``, in words for the page (``pipeline.model.novelty``)."""
    distances = (["motion"] if predictor.novelty.motion else []) + (["model state"] if predictor.novelty.prototypes else [])
    rules = [" and ".join(distances) + " unlike the examples"] if distances else []
    if predictor.rejection_threshold:
        rules.append(f"score below {predictor.rejection_threshold:.0%}")
    return " or ".join(rules) or "off"


@dataclass
class StudioOptions:
    config: Path  # the training config (configs/teach.yaml): extractor settings and the run's recipe
    examples: Path  # folder of action folders
    cache_dir: Path | None = None  # feature cache (default: train.py's for that folder)
    device: str = "auto"
    smooth_s: float = 0.5  # display smoothing of the probabilities
    reset_after_s: float = 2.0  # nobody in view this long: forget the GRU states


class Studio:
    """Owns the source, the extractor, the examples, the recorder, the training job and the model in use."""

    def __init__(self, source: str, opts: StudioOptions):
        self.opts = opts
        try:
            cfg = yaml.safe_load(Path(opts.config).read_text()) or {}
            self.extractor_config = ExtractorConfig.from_dict(cfg["data"]["extractor"])
        except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
            mark = getattr(e, "problem_mark", None)
            why = (f"{e.problem} at line {mark.line + 1}" if mark else getattr(e, "strerror", None) or str(e).splitlines()[0]) if str(e) else type(e).__name__
            raise ExampleError(f"training config {opts.config}: cannot read data.extractor from it ({why})") from None
        self.guard = threading.Lock()  # one extractor forward at a time: live frames and clip caching
        self.extractor = FeatureExtractor(self.extractor_config)
        self.extractor.place(opts.device)
        self.examples = Examples(opts.examples, self.extractor, self.guard, opts.cache_dir)
        self.bus = FrameBus()
        self.predictor: ActionPredictor | None = None
        self.labels: LiveLabels | None = None
        self.model_info: dict | None = None
        self.job: TrainingJob | None = None
        self.job_status: dict | None = None
        self.overlay = Overlay("", 0.0, [])
        self.fps = 0.0
        self.frame_error: tuple[str, float] | None = None  # why a frame could not be labelled, and when
        self._stop = threading.Event()
        self._swap = threading.Lock()  # source and model changes against the loop
        self._train_lock = threading.Lock()
        self.capture: LatestFrameCapture | None = None
        self.source = ""
        self.set_source(source)
        self.load_latest()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="studio")
        self._thread.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="studio-train")
        self._watcher.start()

    # ---- source
    def set_source(self, source: str) -> None:
        """Switch to a camera index, URL or video file (a file loops at its own frame rate: a stand-in camera)."""
        source = str(source).strip()
        is_file = not source.isdigit() and "://" not in source
        capture = LatestFrameCapture(source, realtime=is_file, loop=is_file)  # raises VideoError for a bad source
        recorder = Recorder(capture.fps or 25.0, self.examples.cache_later, self.examples.root / ".recording")
        capture.tap = recorder
        with self._swap:
            old, self.capture, self.recorder, self.source = self.capture, capture, recorder, source
        with self.guard:  # not while the loop steps the model: a reset under a step can break the step
            if self.predictor is not None:
                self.predictor.reset()
                self.labels.reset()
        if old is not None:
            old.tap.cancel()
            old.close()

    # ---- recording
    def record(self, action: str, countdown_s: float, seconds: float) -> None:
        if not 0 <= countdown_s <= 10 or not 0.5 <= seconds <= 30:
            raise ExampleError("countdown 0-10 s and duration 0.5-30 s")
        self.recorder.start(action, self.examples.new_clip(action), countdown_s, seconds)

    # ---- training
    def train(self) -> None:
        """Start a training run on the clips recorded so far; a run under way is cancelled first (the newest
        press wins: it has the newest clips)."""
        with self._train_lock:  # two presses at once: one run, not two
            problem = self.examples.training_problem()
            if problem:
                raise ExampleError(problem)
            if self.job is not None:
                self.job.cancel()
            if not self.examples.wait(timeout=120):
                raise ExampleError("the features of the last clips are still being extracted; try again in a moment")
            args = ["--config", str(Path(self.opts.config).resolve()), "--data.dataset", str(self.examples.root.resolve()),
                    "--data.cache_dir", str(Path(self.examples.cache_dir).resolve())]  # fmt: skip
            self.job = TrainingJob(args, self.runs_dir, cwd=self.runs_dir)
            self.job_status = self.job.status()

    def cancel_training(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _watch(self) -> None:
        """Follow the training run; load its model when it is done."""
        while not self._stop.wait(0.5):
            job = self.job
            if job is None:
                continue
            status, model = job.status(), None
            if status["state"] == "done" and (self.job_status or {}).get("state") != "done":
                try:
                    model = self._open_model(status["checkpoint"], status)
                except Exception as e:  # noqa: BLE001 - the watcher must outlive a bad checkpoint; the page says why
                    status = {**status, "state": "failed", "error": f"the new model cannot be loaded: {e}"}
            with self._swap:  # the run's end and its model in one step: no page shows the new model beside a run still going
                if model is not None:
                    self.predictor, self.labels, self.model_info = model
                if job is self.job:  # not a run replaced while it was polled
                    self.job_status = status

    # ---- the model
    def load_model(self, checkpoint: str | Path) -> None:
        model = self._open_model(checkpoint)
        with self._swap:
            self.predictor, self.labels, self.model_info = model

    def _open_model(self, checkpoint: str | Path, training: dict | None = None) -> tuple[ActionPredictor, LiveLabels, dict]:
        """The predictor, its live labels and what the page says of it; nothing is swapped in yet."""
        predictor = ActionPredictor(checkpoint, device=self.opts.device)
        history = (training or {}).get("history") or []
        info = {
            "checkpoint": str(checkpoint), "classes": predictor.class_names, "unknown": unknown_rules(predictor),
            "background": predictor.background,
            "val_top1": max((h.get("val_top1", 0.0) for h in history), default=None), "train_seconds": (training or {}).get("seconds"),
        }  # fmt: skip
        labels = LiveLabels(predictor.class_names, self.opts.smooth_s, predictor.rejection_threshold, predictor.background, warmup_frames=predictor.warmup_frames)
        return predictor, labels, info

    @property
    def runs_dir(self) -> Path:
        """Where this folder's training runs go (``runs/<name>/version_N`` under it): inside the examples folder,
        hidden from the actions, so that the app finds its models whichever folder it is started from."""
        return self.examples.root.resolve() / ".training"

    def load_latest(self) -> None:
        """The newest model trained on these examples before (the app was restarted), if its classes still hold;
        also in ``runs/`` of the shell's folder, where versions before 2026-12 put them."""
        name = self.examples.definition.name
        best = sorted(
            (p for runs in (self.runs_dir / "runs" / name, Path("runs") / name) for p in runs.glob("version_*/checkpoints/best-*.ckpt")),
            key=lambda p: p.stat().st_mtime,
        )
        for ckpt in reversed(best):
            try:
                self.load_model(ckpt)
                return
            except (CheckpointError, OSError, RuntimeError):
                continue

    # ---- the live loop
    def _loop(self) -> None:
        last_fed, last_person, recent = -1e9, time.perf_counter(), []
        while not self._stop.is_set():
            with self._swap:
                capture, predictor, labels = self.capture, self.predictor, self.labels
            lf = capture.get(timeout=0.5)
            if lf is None:
                continue
            fps = (predictor.fps if predictor else None) or self.extractor_config.fps or capture.fps
            if lf.captured_at - last_fed >= 0.9 / max(fps, 1.0):  # at most the rate the model was trained at
                last_fed = lf.captured_at
                recent = [t for t in recent if t > lf.captured_at - 2.0] + [lf.captured_at]
                self.fps = len(recent) / 2.0
                try:
                    with self.guard:
                        if predictor:
                            overlay = labels.update(predictor(lf.frame[None]), lf.captured_at, predictor.states.slot)
                        else:
                            overlay = self._skeletons(lf.frame)
                except Exception as e:  # noqa: BLE001 - one bad frame must not end the stream: say it, start over
                    overlay = Overlay("", 0.0, [])
                    self._frame_failed(e, predictor, labels)
                if overlay.people:
                    last_person = lf.captured_at
                elif predictor and lf.captured_at - last_person > self.opts.reset_after_s:
                    predictor.reset()
                    labels.reset()
                    last_person = lf.captured_at
                self.overlay = overlay
            # in place: the recorder has had the frame already (capture's tap runs first)
            self.bus.publish(draw(lf.frame, replace(self.overlay, fps=self.fps, status=self._status_line())))

    def _frame_failed(self, e: Exception, predictor: ActionPredictor | None, labels: LiveLabels | None) -> None:
        """A frame the model could not label: the stream's status line says why for ``ERROR_SHOW_S`` (stderr
        once per new reason), and the people's states start over, as after a change of source."""
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        if self.frame_error is None or why != self.frame_error[0]:
            print(f"teach: a frame could not be labelled ({why}); carrying on", file=sys.stderr, flush=True)
        self.frame_error = (why, time.monotonic())
        with self.guard:
            if predictor is not None:
                predictor.reset()
                labels.reset()

    @torch.inference_mode()
    def _skeletons(self, frame: np.ndarray) -> Overlay:
        """Before there is a model: every person's box and skeleton, no label."""
        det = self.extractor(frame[None])
        boxes, kpts = det.boxes.cpu().numpy(), det.keypoints.cpu().numpy()
        people = [Person(0, boxes[i], kpts[i], "", 0.0) for i in range(len(boxes))]
        return Overlay("", 0.0, [], people)

    def _status_line(self) -> str | None:
        rec = self.recorder.status()
        if rec is None:
            err = self.frame_error
            if err is not None and time.monotonic() - err[1] < ERROR_SHOW_S:
                return f"a frame could not be labelled: {err[0]}"
            return self.capture.status
        if rec["phase"] == "countdown":
            return f"recording {rec['action']} in {rec['seconds_left']:.0f} s"
        return f"REC {rec['action']} {rec['elapsed']:.1f} / {rec['seconds']:.0f} s"

    # ---- for the page
    def state(self) -> dict:
        o = self.overlay
        with self._swap:  # the run and the model as one step of the watcher left them
            training, model = self.job_status, self.model_info
        return {
            "source": self.source,
            "actions": self.examples.state(),
            "pending": self.examples.pending,
            "recording": self.recorder.status(),
            "recording_error": self.recorder.last_error,
            "training": training,
            "can_train": self.examples.training_problem(),
            "model": model,
            "label": o.label if self.predictor else "",  # an action, unknown, nobody, or the background class
            "score": round(o.score, 3),
            "top": [[n, round(p, 3)] for n, p in o.top],
            "people": len(o.people),
            "fps": round(self.fps, 1),
        }

    def close(self) -> None:
        self._stop.set()
        if self.job is not None:
            self.job.cancel()
        self._thread.join(timeout=5)
        self.recorder.cancel()
        if self.capture is not None:
            self.capture.close()
        self.examples.close()
        self.bus.close()

