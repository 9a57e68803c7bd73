"""Features and GRU outputs -> novelty: is this something the model was trained on? The rules behind ``unknown``.

A classifier trained on N actions names one of them for anything, and with confidence: an unseen action is
named as its nearest known one, so its top probability says little (``benchmarks/open_set.py``). Distances
say more, each in units of its calibrated limit (above 1 is ``unknown``):

* **motion** (``MotionRule``, the one that decides): a person's last ``window`` frames described by what the body
  does, not where the camera stands or what shape its frame is (keypoints in the person's box: mean, spread,
  frame-to-frame change; how the box's shape varies; how it travels in the body's own units; each kind of
  evidence weighed the same), and the distance to the
  nearest such window of the training videos (the bank, kept in the checkpoint). Calibrated as a new
  person is met: each training clip's windows against the bank without its own group (the actor; the clip
  itself when the data has no groups), and each validation clip's against the whole bank; a clip is
  ``unknown`` when most of its frames are, so the limit leaves ``quantile`` of those clips' median distances
  above it. Independent of the model; fitted once.
* **prototypes** (``PrototypeRule``): the GRU's output at a frame, its Mahalanobis distance (one shared
  covariance) to the nearest class mean of the training frames; the limit leaves ``quantile`` of the
  validation frames above it. Refitted with the model at every validation, as the checkpoint is. Alone it
  misses what motion catches (an unseen action the GRU maps onto a known class's states) and flags known
  actions of an unusual actor. With both on, a frame's novelty is their weighted geometric mean,
  ``motion ** (1 - w) * prototypes ** w`` (``prototype_weight`` w): a small w lets the GRU state vouch for a
  known action done in an unusual way (another person's stride) without letting it overrule motion.

The first ``min_frames`` of a track are not judged (novelty 0), as training leaves them out of the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.data.features import KXY, POSE_DIM

KEYPOINTS = slice(6, KXY.stop)  # of the pose block: keypoints (x, y), relative to the person's box
KEYPOINT_DIM = KEYPOINTS.stop - KEYPOINTS.start
# the descriptor's kinds of evidence, in order, and their sizes: keypoint mean, spread and change; box shape (two
# numbers); box motion in body units (spread, change). Each kind weighs the same in the distance: the box's few
# numbers are how fast and how far the body travels, and would drown among 102 keypoint numbers.
BLOCKS = (KEYPOINT_DIM, KEYPOINT_DIM, KEYPOINT_DIM, 2, 3, 3)
DESCRIPTOR_DIM = sum(BLOCKS)
# 2: nothing in the descriptor depends on the frame's shape (see ``describe``); 1: checkpoints made before it
DESCRIPTOR = 2
WEIGHTS = torch.cat([torch.full((n,), DESCRIPTOR_DIM / len(BLOCKS) / n) for n in BLOCKS])  # per dimension, summing to DESCRIPTOR_DIM
MAX_BANK = 4096  # windows kept from the training videos (evenly drawn): about 2 MB in a checkpoint
MAX_FRAMES = 100_000  # training frames the class means and covariance are taken from (evenly drawn)
CHUNK = 1024  # query windows per distance computation (memory: CHUNK x bank)
MIN_THRESHOLD = 1e-3  # in units of the scaled distances
CALIBRATION_WINDOWS = 64  # of each clip, evenly drawn, for its median distance


def describe(windows: torch.Tensor, version: int = DESCRIPTOR) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose windows (N, W, POSE_DIM), oldest frame first -> descriptors (N, DESCRIPTOR_DIM) and the frames
    each has the person in (N,); frames without the person (``present`` 0) do not count.

    What the body does, not where the camera stands: the keypoints in the person's box (mean, spread, mean
    frame-to-frame change), how the box's shape varies (spread and change of its log aspect), and how the
    box moves and grows in the body's own units (spread, mean change of its centre in mean box widths across
    and heights down, of its height in mean heights), never where in the frame the person is, how big, or the
    frame's own shape: the box is in frame units, so a 360x144 frame of two people halves a person's width
    against their own 180x144 clip, and a descriptor that read the aspect's mean or moves across in heights
    (``version`` 1, checkpoints before ``DESCRIPTOR`` 2) called both people new.
    """
    present = (windows[..., 0] > 0).to(torch.float32)[..., None]
    n = present.sum(1).clamp(min=1)
    box = windows[..., 2:6].to(torch.float32)
    size = ((box[..., 2:4] * present).sum(1) / n).clamp(min=1e-3)  # the window's mean box width and height
    kxy = windows[..., KEYPOINTS].to(torch.float32)

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = (x * present).sum(1) / n
        spread = (((x - mean[:, None]) ** 2 * present).sum(1) / n).sqrt()
        both = present[:, 1:] * present[:, :-1]
        change = ((x[:, 1:] - x[:, :-1]).abs() * both).sum(1) / both.sum(1).clamp(min=1)
        return mean, spread, change

    k = stats(kxy)
    if version == 1:
        height = size[:, 1:2]
        a = stats(box[..., 2:3] / box[..., 3:4].clamp(min=1e-3))
        b = stats(torch.cat([box[..., 0:2] / height[:, None], box[..., 3:4] / height[:, None]], -1))
        return torch.cat([*k, a[0], a[1], b[1], b[2]], 1), present[:, :, 0].sum(1)
    a = stats(torch.log(box[..., 2:3].clamp(min=1e-3) / box[..., 3:4].clamp(min=1e-3)))  # a constant frame factor cancels
    b = stats(torch.cat([box[..., 0:2] / size[:, None], box[..., 3:4] / size[:, None, 1:2]], -1))
    return torch.cat([*k, a[1], a[2], b[1], b[2]], 1), present[:, :, 0].sum(1)


def sequence_windows(features: torch.Tensor, window: int) -> torch.Tensor:
    """A track's features (T, D) -> the pose window that ends at each frame (T, window, POSE_DIM), as the
    streaming predictor holds it (zero rows before the first frame)."""
    pose = F.pad(features[:, -POSE_DIM:].to(torch.float32), (0, 0, window - 1, 0))
    return pose.unfold(0, window, 1).transpose(1, 2)


def upper_quantile(distances: torch.Tensor, quantile: float) -> float:
    """The distance that ``quantile`` of ``distances`` lie above (inf when there are none; at least
    ``MIN_THRESHOLD``: where the known examples are all alike, rounding is not novelty)."""
    distances = distances[torch.isfinite(distances)]
    return max(float(torch.quantile(distances.double(), 1 - quantile)), MIN_THRESHOLD) if len(distances) else math.inf


class MotionRule:
    """The bank of training motion descriptors (centred and scaled: each dimension in units of its spread,
    weighted so that each kind of evidence in ``BLOCKS`` counts the same), the centre and scale, and the
    calibrated threshold."""

    def __init__(
        self, bank: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor, threshold: float, window: int, min_frames: int, quantile: float,
        calibration: int = 0, descriptor: int = 1,
    ):
        self.bank, self.centre, self.scale = bank.to(torch.float32), centre.to(torch.float32), scale.to(torch.float32)
        self.threshold, self.window, self.min_frames, self.quantile, self.calibration = threshold, window, min_frames, quantile, calibration
        self.descriptor = descriptor  # describe()'s version the bank was made with (1 in checkpoints that do not say)

    @classmethod
    def fit(
        cls, train: list[torch.Tensor], groups: list[str], val: list[torch.Tensor], window: int, quantile: float, min_frames: int,
        max_bank: int = MAX_BANK, descriptor: int = DESCRIPTOR,
    ) -> MotionRule | None:
        """From the training tracks (features (T, D) each) and their groups, calibrated on them and on the
        validation tracks. None when there is nothing to calibrate on (fewer than two groups). ``descriptor``:
        ``describe``'s version (the current one; 1 only to measure against it)."""

        def judged(x: torch.Tensor) -> torch.Tensor:  # descriptors of the windows with enough frames to judge
            d, n = describe(sequence_windows(x, window), descriptor)
            return d[n >= min_frames]

        descs = [judged(x) for x in train]
        owner = [g for d, g in zip(descs, groups) for _ in range(len(d))]
        if len(set(owner)) < 2:
            return None
        bank = torch.cat(descs)
        keep = torch.linspace(0, len(bank) - 1, min(max_bank, len(bank))).round().long()  # evenly: every video keeps its share
        bank, owner = bank[keep], [owner[i] for i in keep.tolist()]
        centre, scale = bank.mean(0), bank.std(0).clamp(min=1e-3) / WEIGHTS.sqrt()  # in units of spread, each kind of evidence weighed the same
        rule = cls((bank - centre) / scale, centre, scale, 1.0, window, min_frames, quantile, descriptor=descriptor)
        index = {g: k for k, g in enumerate(dict.fromkeys(groups))}
        bank_group = torch.tensor([index[g] for g in owner])
        # a clip is unknown when most of its frames are: calibrate on each known clip's median distance
        medians = []
        for d, g in [*zip(descs, groups), *((judged(x), None) for x in val)]:  # validation: against the whole bank
            if len(d):
                d = d[torch.linspace(0, len(d) - 1, min(len(d), CALIBRATION_WINDOWS)).round().long()]
                own = None if g is None else torch.full((len(d),), index[g])
                medians.append(rule._nearest(rule._scaled(d), own, None if g is None else bank_group).median())
        distances = torch.stack(medians)
        rule.threshold, rule.calibration = upper_quantile(distances, quantile), int(torch.isfinite(distances).sum())
        return rule

    def to(self, device: torch.device | str) -> MotionRule:
        """On the device the frames are on, once: no copy of the bank per frame."""
        self.bank, self.centre, self.scale = self.bank.to(device), self.centre.to(device), self.scale.to(device)
        return self

    def _scaled(self, descriptors: torch.Tensor) -> torch.Tensor:
        return (descriptors - self.centre) / self.scale

    def _nearest(self, scaled: torch.Tensor, group: torch.Tensor | None = None, bank_group: torch.Tensor | None = None) -> torch.Tensor:
        """Distance of scaled descriptors to the nearest bank window (of another group, when groups are given)."""
        d = torch.cdist(scaled, self.bank)
        if group is not None and bank_group is not None:
            d = d.masked_fill(group[:, None] == bank_group[None], math.inf)
        return d.min(1).values / math.sqrt(DESCRIPTOR_DIM) if d.shape[1] else scaled.new_full((len(scaled),), math.inf)

    def novelty(self, windows: torch.Tensor) -> torch.Tensor:
        """Pose windows (N, W, POSE_DIM) -> distance to the nearest training window / threshold (N,); 0 where
        the window has too few frames of the person to judge."""
        d, n = describe(windows, self.descriptor)
        out = torch.cat([self._nearest(self._scaled(d[i : i + CHUNK])) for i in range(0, len(d), CHUNK)] or [d.new_zeros(0)]) / self.threshold
        return torch.where(n >= self.min_frames, out, torch.zeros_like(out))

    def state(self) -> dict:
        return {
            "bank": self.bank.cpu().clone(), "centre": self.centre.cpu().clone(), "scale": self.scale.cpu().clone(), "threshold": self.threshold, "window": self.window,
            "min_frames": self.min_frames, "quantile": self.quantile, "calibration": self.calibration, "descriptor": self.descriptor,
        }  # fmt: skip

    def summary(self) -> dict:
        return {"threshold": round(self.threshold, 4), "quantile": self.quantile, "window": self.window, "bank": len(self.bank), "calibration": self.calibration}


class PrototypeRule:
    """Class means of the GRU's training outputs, their shared precision matrix, and the calibrated threshold."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor, threshold: float, min_frames: int, quantile: float, calibration: int = 0):
        self.means, self.precision = means.to(torch.float32), precision.to(torch.float32)
        self.threshold, self.min_frames, self.quantile, self.calibration = threshold, min_frames, quantile, calibration

    @classmethod
    def fit(cls, train: list[torch.Tensor], labels: list[int], val: list[torch.Tensor], num_classes: int, quantile: float, min_frames: int) -> PrototypeRule | None:
        """From the GRU's outputs (T, H) on the training tracks and their classes, calibrated on the outputs of
        the validation tracks. None without validation frames to calibrate on, or a class without frames."""
        h = torch.cat([o[min_frames:] for o in train]).cpu().double()  # fitted on the host, wherever the GRU ran
        y = torch.cat([torch.full((max(len(o) - min_frames, 0),), c) for o, c in zip(train, labels)])
        keep = torch.linspace(0, len(h) - 1, min(MAX_FRAMES, len(h))).round().long() if len(h) else torch.zeros(0, dtype=torch.long)
        h, y = h[keep], y[keep]
        calib_frames = [o[min_frames:].cpu() for o in val if len(o) > min_frames]
        if not calib_frames or any((y == c).sum() == 0 for c in range(num_classes)):
            return None
        means = torch.stack([h[y == c].mean(0) for c in range(num_classes)])
        centred = h - means[y]
        cov = centred.T @ centred / len(h) + 1e-3 * torch.eye(h.shape[1], dtype=h.dtype)
        rule = cls(means, torch.linalg.inv(cov), 1.0, min_frames, quantile)
        distances = rule._distance(torch.cat(calib_frames))
        rule.threshold, rule.calibration = upper_quantile(distances, quantile), len(distances)
        return rule

    def to(self, device: torch.device | str) -> PrototypeRule:
        """On the device the GRU runs on, once."""
        self.means, self.precision = self.means.to(device), self.precision.to(device)
        return self

    def _distance(self, h: torch.Tensor) -> torch.Tensor:
        d = h.to(torch.float32)[:, None] - self.means[None]
        return ((d @ self.precision) * d).sum(-1).min(1).values  # (N, classes): one matrix product, not a three-way einsum

    def novelty(self, h: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """GRU outputs (N, H) and each track's frames so far (N,) -> distance / threshold (N,); 0 for a track
        younger than ``min_frames``."""
        out = self._distance(h) / self.threshold
        return torch.where(age > self.min_frames, out, torch.zeros_like(out))

    def state(self) -> dict:
        return {
            "means": self.means.cpu().clone(), "precision": self.precision.cpu().clone(), "threshold": self.threshold, "min_frames": self.min_frames,
            "quantile": self.quantile, "calibration": self.calibration,
        }  # fmt: skip

    def summary(self) -> dict:
        return {"threshold": round(self.threshold, 4), "quantile": self.quantile, "calibration": self.calibration}


@dataclass
class Novelty:
    """The checkpoint's rules (either may be off). A frame's novelty is the weighted geometric mean of theirs:
    unknown when motion and GRU state are, together, past their limits (one rule alone when the other is off).
    ``prototype_weight``: the GRU state's share (0.5 in checkpoints made before it could be set)."""

    motion: MotionRule | None = None
    prototypes: PrototypeRule | None = None
    prototype_weight: float = 0.5

    def __bool__(self) -> bool:
        return self.motion is not None or self.prototypes is not None

    def to(self, device: torch.device | str) -> Novelty:
        for rule in (self.motion, self.prototypes):
            if rule is not None:
                rule.to(device)
        return self

    def combine(self, motion: torch.Tensor | None, prototypes: torch.Tensor | None) -> torch.Tensor:
        """The rules' novelties (None: the rule is off) -> the frame's."""
        if motion is not None and prototypes is not None:
            return motion ** (1 - self.prototype_weight) * prototypes**self.prototype_weight
        return motion if motion is not None else prototypes

    def sequence(self, features: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        """A track's features (T, D) and GRU outputs (T, H) -> novelty of each frame (T,), as streaming gives."""
        if not self:
            return features.new_zeros(len(features), dtype=torch.float32)
        self.to(features.device)  # offline (evaluation): a no-op after the first track
        return self.combine(
            self.motion.novelty(sequence_windows(features, self.motion.window)) if self.motion else None,
            self.prototypes.novelty(outputs, torch.arange(1, len(outputs) + 1, device=outputs.device)) if self.prototypes else None,
        )

    def state(self) -> dict:
        """What the checkpoint (and an exported folder) keeps: plain tensors and numbers."""
        return {
            "motion": self.motion.state() if self.motion else None, "prototypes": self.prototypes.state() if self.prototypes else None,
            "prototype_weight": self.prototype_weight,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict | None) -> Novelty:
        state = state or {}
        return cls(
            MotionRule(**state["motion"]) if state.get("motion") else None,
            PrototypeRule(**state["prototypes"]) if state.get("prototypes") else None,
            state.get("prototype_weight", 0.5),
        )

    def summary(self) -> dict:
        """For report.json and what ``train.py`` prints."""
        out = {name: rule.summary() for name, rule in (("motion", self.motion), ("prototypes", self.prototypes)) if rule is not None}
        if len(out) == 2:
            out["prototypes"]["weight"] = self.prototype_weight
        return out
