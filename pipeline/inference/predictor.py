"""Frames -> per-person class probabilities, streaming: the extractor, the tracker and the GRU from a checkpoint.

The checkpoint alone configures the extractor (weights identity, image size, layers, fps), so features
match training exactly. Every call costs one extractor forward over the new frames, the tracker's update
per frame, and per frame one recurrent step over all live tracks as one batch, each track with its own
carried state: a batch of frames gives the same outputs as the frames one at a time, a track's outputs
equal a full-sequence forward over that track's features (``pipeline.data.tracking.track_sequence``), and no
window is ever recomputed. Each track also carries its age and its last frames of pose, from which, with its
GRU output, the checkpoint's rules (``pipeline.model.novelty``) say how novel it is. Results stay on the
device until one copy per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.data.features import POSE_DIM, ExtractorConfig
from pipeline.data.tracking import PersonTracker, TrackerConfig, subject_weight, track_batch
from pipeline.inference.backends import load_parts
from pipeline.model.gates import ExplicitGRU, mean_gate_activity
from pipeline.model.novelty import Novelty
from pipeline.options import MAX_PEOPLE, OptionError, check_range


@dataclass
class Predictions:
    """Results of one batch of frames, on the host, one row per person seen (grouped by frame, in order):
    the frame's position in the batch ``frame`` (R,), ``track`` id (R,), class ``probs`` (R, C), ``boxes``
    (R, 4 xyxy, source pixels), ``keypoints`` (R, 17, 3), detection ``scores`` (R,), the main-subject rule's
    ``weight`` (R,), the track's ``novelty`` now (R,; above 1: ``unknown`` by the checkpoint's rules,
    ``pipeline.model.novelty``; 0 without rules or before they judge), and with ``inspect`` on, the mean
    update / reset ``gates`` (R,) of the GRU step."""

    frames: int
    frame: np.ndarray
    track: np.ndarray
    probs: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray
    weight: np.ndarray
    novelty: np.ndarray
    gates: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.frames

    def rows(self) -> list[np.ndarray]:
        """Row indices of each frame of the batch."""
        starts = np.searchsorted(self.frame, np.arange(self.frames + 1))
        return [np.arange(starts[i], starts[i + 1]) for i in range(self.frames)]


class TrackStates:
    """The recurrent state of every live track, one slot each in one tensor, so that all tracks step as
    one batch. A new track starts from the zero state; a track unseen for ``lost_frames`` is dropped."""

    def __init__(self, lost_frames: int):
        self.lost_frames = lost_frames
        self.slot: dict[int, int] = {}
        self.last_seen: dict[int, int] = {}
        self.state: list[torch.Tensor] = []  # (layers, capacity, hidden) each: [h] for GRU / RNN, [h, c] for LSTM
        self.free: list[int] = []

    @property
    def capacity(self) -> int:
        return self.state[0].shape[1] if self.state else 0

    def _grow(self, template: list[torch.Tensor]) -> None:
        """Double the slots (at least 4 more), zero-initialised like ``template`` (layers, 1, hidden)."""
        more = max(self.capacity, 4)
        new = [z.expand(-1, more, -1).clone() for z in template]
        self.free += range(self.capacity + more - 1, self.capacity - 1, -1)
        self.state = [torch.cat([s, n], 1) for s, n in zip(self.state, new)] if self.state else new

    def alive(self, now: int, seen: np.ndarray, template: list[torch.Tensor]) -> tuple[list[int], torch.Tensor]:
        """Tracks to step at frame ``now`` (those ``seen`` now first, in their order) and their slots.

        ``template``: zero states (layers, 1, hidden) that show the shapes, for a new track's slot."""
        for t in [t for t, last in self.last_seen.items() if now - last > self.lost_frames]:
            self.free.append(self.slot.pop(t))
            del self.last_seen[t]
        seen_ids = seen.tolist()
        for t in seen_ids:
            self.last_seen[t] = now
            if t not in self.slot:
                if not self.free:
                    self._grow(template)
                self.slot[t] = self.free.pop()
                for s in self.state:  # a reused slot: back to the zero state
                    s[:, self.slot[t]] = 0
        ids = seen_ids + [t for t in self.slot if t not in set(seen_ids)]
        return ids, torch.tensor([self.slot[t] for t in ids], dtype=torch.long, device=template[0].device)


HOST_COLUMNS = 4 + 1 + 1 + 17 * 3  # box, score, frame, keypoints: the host copy's columns before the features

class ActionPredictor:
    """Streaming action recognition of every person in view, from a training checkpoint or an exported folder.

    ``predictor(frames)`` with uint8 BGR frames (B, H, W, 3), consecutive in time at the checkpoint's fps,
    returns their :class:`Predictions`: the extractor's one forward over the batch gives every person, the
    tracker follows them, and per frame one recurrent step over all live tracks (a batch, whatever the
    crowd) with each track's state carried. ``reset()`` starts a new video.

    ``max_people``: people per frame (the highest-scoring); 1 gives one label per video, the single-subject
    mode. ``tracker``: the tracker's settings (``pipeline.data.tracking``). ``backend``: ``torch``,
    ``onnxruntime`` or ``openvino`` (``pipeline.inference.runtime``); ``auto``: PyTorch for a checkpoint.
    ``step_device``: where the recurrent step runs (``auto``: with the extractor, see ``torch_backend.step_device_for``).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        half: bool = True,
        weights: str | None = None,
        max_people: int = MAX_PEOPLE,
        tracker: TrackerConfig | None = None,
        backend: str = "auto",
        step_device: str = "auto",
    ):
        parts = load_parts(checkpoint, backend, device, half, weights, max_people, step_device)
        self.parts = parts
        self.record: dict = parts.record
        self.class_names: list[str] = parts.class_names
        self.device = parts.device  # the extractor's
        self.step_device = parts.step_device or parts.device  # the recurrent step's, its states' and the rules'
        here = torch.device(parts.extractor.device)
        self._move_features = (here.type, here.index or 0) != (self.step_device.type, self.step_device.index or 0)
        self.extractor = parts.extractor
        self.rejection: dict = parts.rejection  # fitted on the validation split (pipeline.model.classifier)
        self.novelty: Novelty = parts.novelty  # the distance rules (pipeline.model.novelty)
        self.background: str | None = parts.background  # a class that is no action
        self.warmup_frames: int = parts.warmup_frames  # a track's first frames, left out of its label
        self.cell: str = parts.cell
        self.tracker_config = tracker or TrackerConfig(conf=self.config.conf)
        self.inspect = False  # also run the explicit GRU cell for its gates (the timeline plot's lower panel)
        self.model = model = parts.model  # PyTorch only (None for an exported model)
        self._inspector = ExplicitGRU(model.rnn).to(self.step_device) if model is not None and self.cell == "gru" else None
        self.reset()

    @property
    def config(self) -> ExtractorConfig:
        return self.extractor.config

    def set_input_size(self, imgsz: int | None = None, max_imgsz: int | None = None) -> None:
        """Run the pose model at another input size than the checkpoint's: ``imgsz`` the long side (the
        smallest one with a cap), ``max_imgsz`` the cap up to which a source runs at its own size (0: none).
        The pose block is relative to the frame and the box, so it keeps its meaning; pooled appearance
        features shift with the scale (``benchmarks/detection_size.py``)."""
        check_range("--imgsz", imgsz, 32, 4096)
        cap = self.config.max_imgsz if max_imgsz is None else (max_imgsz or None)
        low = self.config.imgsz if imgsz is None else imgsz
        if cap is not None and cap < low:
            raise OptionError(f"--max-imgsz {cap} is below --imgsz {low}: give a cap at least as large, or 0 for none")
        self.extractor.config = replace(self.config, imgsz=low, max_imgsz=cap)

    @property
    def fps(self) -> float | None:
        """The frame rate the model was trained at (None: each video's own)."""
        return self.config.fps

    @property
    def rejection_threshold(self) -> float:
        """Smoothed top probability below which a frame is ``unknown``: the checkpoint's calibration."""
        return float(self.rejection.get("threshold", 0.0))

    @property
    def can_inspect(self) -> bool:
        return self._inspector is not None

    def reset(self, fps: float | None = None) -> None:
        """Start a new video whose frames arrive at ``fps`` (default: the model's)."""
        self.tracker = PersonTracker(self.tracker_config, fps or self.fps or 25.0)
        self.states = TrackStates(self.tracker.lost_frames)
        self.gate_states = TrackStates(self.tracker.lost_frames)
        self.frame_no = 0

    def _template(self) -> list[torch.Tensor]:
        """A new track's state: the recurrent cell's, its age in frames (1, 1, 1), and with a motion rule its
        pose window (W, 1, POSE_DIM)."""
        dev = self.step_device
        z = torch.zeros(*self.parts.state_shape[:1], 1, self.parts.state_shape[1], device=dev)
        age = torch.zeros(1, 1, 1, device=dev)
        window = [torch.zeros(self.novelty.motion.window, 1, POSE_DIM, device=dev)] if self.novelty.motion else []
        return [z, z, age, *window] if self.cell == "lstm" else [z, age, *window]

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray | torch.Tensor) -> Predictions:
        det = self.extractor(frames)
        # one copy to the host for the tracker (boxes, scores, frame), the drawing (keypoints) and, when the
        # step runs elsewhere than the extractor, the features
        cols = [det.boxes, det.scores[:, None], det.frame[:, None].float(), det.keypoints.flatten(1)]
        copied = torch.cat([*cols, det.features.float()] if self._move_features else cols, 1).cpu()
        host = copied.numpy()
        features = copied[:, HOST_COLUMNS:].to(self.step_device) if self._move_features else det.features
        images = (frames.cpu().numpy() if torch.is_tensor(frames) else frames) if self.tracker.needs_images else None
        tracked = track_batch(self.tracker, host[:, 5].astype(np.int64), host[:, :4], host[:, 4], len(frames), images)
        template = self._template()
        cells = 2 if self.cell == "lstm" else 1
        probs, novelty, rows, tracks, gates = [], [], [], [], []
        for ids, idx in tracked:
            alive, slots = self.states.alive(self.frame_no, ids, template)
            self.frame_no += 1
            if not alive:
                continue
            x = features.new_zeros(len(alive), features.shape[1])
            x[: len(ids)] = features[torch.from_numpy(idx).to(self.step_device)]
            state = [s[:, slots] for s in self.states.state]
            p, new = self.parts.step(x.float(), state[:cells])
            new.append(state[cells] + 1)  # age
            if self.novelty.motion:  # the pose window moves on by this frame (a track not seen now: an absent row)
                new.append(torch.cat([state[cells + 1][1:], x[None, :, -POSE_DIM:].float()]))
            novelty.append([new[0][-1, : len(ids)], *(t[:, : len(ids)] for t in new[cells:])])  # judged once per batch, below
            for s, n in zip(self.states.state, new):
                s[:, slots] = n
            probs.append(p[: len(ids)])
            rows.append(idx)
            tracks.append(ids)
            if self.inspect and self._inspector is not None:
                gates.append(self._gates(x, ids, template, state[0]))
        c = len(self.class_names)
        rows_all = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        sel = torch.from_numpy(rows_all).to(self.step_device)
        p = torch.cat(probs) if probs else features.new_zeros(0, c)
        w = subject_weight(features[sel]) if len(sel) else p.new_zeros(0)
        n = self._novelty(novelty) if novelty else p.new_zeros(len(p))
        g = torch.cat(gates) if gates else p.new_zeros(0, 2)
        out = torch.cat([p, w[:, None], n[:, None], g if len(g) == len(p) else p.new_zeros(len(p), 2)], 1).cpu().numpy()  # one copy back
        return Predictions(
            frames=len(frames), frame=host[rows_all, 5].astype(np.int64),
            track=np.concatenate(tracks) if tracks else np.zeros(0, np.int64),
            probs=out[:, :c], boxes=host[rows_all, :4], keypoints=host[rows_all, 6:HOST_COLUMNS].reshape(-1, 17, 3), scores=host[rows_all, 4],
            weight=out[:, c], novelty=out[:, c + 1], gates={"update": out[:, c + 2], "reset": out[:, c + 3]} if gates else None,
        )  # fmt: skip

    def _novelty(self, steps: list[list[torch.Tensor]]) -> torch.Tensor:
        """The novelty of every track seen in the batch (``pipeline.model.novelty``), from each step's new state of
        the tracks seen: the cell's output (the last layer's new h), the age and, with a motion rule, the pose
        window. One distance computation for the whole batch, not one per frame."""
        h, age, *window = (torch.cat(parts, 0 if k == 0 else 1) for k, parts in enumerate(zip(*steps)))  # (N, H), (1, N, 1), (W, N, P)
        if not self.novelty:
            return h.new_zeros(len(h))
        return self.novelty.combine(
            self.novelty.motion.novelty(window[0].transpose(0, 1)) if self.novelty.motion else None,
            self.novelty.prototypes.novelty(h, age[0, :, 0]) if self.novelty.prototypes else None,
        )

    def _gates(self, x: torch.Tensor, ids: np.ndarray, template: list[torch.Tensor], before: torch.Tensor) -> torch.Tensor:
        """Mean update and reset gate (len(ids), 2) of this step, from the explicit GRU cell with its own state per
        track (``before``: the model's state before the step, which carries what velocity reads)."""
        n = self.model.rnn.hidden_size  # the cell's own state, before the summary's running means
        alive, slots = self.gate_states.alive(self.frame_no - 1, ids, [template[0][..., :n]])
        _, h, g = self._inspector(self.model.embed(x[:, None].float(), before), self.gate_states.state[0][:, slots])
        self.gate_states.state[0][:, slots] = h
        m = mean_gate_activity(g)
        return torch.stack([m["update"][: len(ids), 0], m["reset"][: len(ids), 0]], 1)
