"""Frames -> features: one YOLO pose forward per frame batch gives a per-frame feature vector.

The vector is ``[pooled backbone features | pose block]``:

* pooled features: global average of the outputs of ``layers`` (multi-scale, e.g. the C2PSA block and
  the three neck outputs that feed the pose head), captured by forward hooks during the same pass;
* pose block (``POSE_DIM`` = 57) for the main person (highest detection score; the best-scoring
  anchor is what NMS would keep first, so no NMS is needed): ``present`` flag, detection score, box
  centre / size relative to the frame (4), 17 keypoints normalised to the person box (34) and their
  confidences (17). All zeros when nobody scores above ``conf``.

Frames arrive as uint8 BGR and are resized, letterboxed and normalised on the model's device (fp16 on
CUDA). The same extractor object serves training (through the feature cache) and inference.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.weights import WeightsIdentity, load_pose_model

FEATURE_VERSION = 1  # bump when the meaning of the vector changes; it is part of every cache key
NUM_KEYPOINTS = 17
POSE_DIM = 2 + 4 + NUM_KEYPOINTS * 3
STRIDE = 32
PAD_VALUE = 114 / 255  # Ultralytics' letterbox grey
# COCO keypoint order; left/right pairs swap under a horizontal flip
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
FLIP_KEYPOINTS = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip


@dataclass(frozen=True)
class ExtractorConfig:
    """Everything that determines the features; it is stored in checkpoints and keys the cache.

    Args:
        weights: Ultralytics pose weights name or path (``yolo11n-pose.pt``), or a model YAML
            (``yolo11n-pose.yaml``, random init, for tests only).
        imgsz: long side of the network input in pixels (the short side keeps the aspect ratio and
            is padded to a multiple of 32).
        layers: model layer indices whose outputs are average-pooled into the vector (empty: pose only).
        fps: frame rate to sample videos at (None: the source's own).
        max_frames: cap on frames per video (None: no cap).
        conf: detection score above which a person counts as present.
        pool: ``global`` averages each layer's map over the whole frame; ``person`` averages only the
            cells inside the main person's box (zeros when nobody is present), which keeps the static
            background out of the features.
    """

    weights: str = "yolo11n-pose.pt"
    imgsz: int = 320
    layers: tuple[int, ...] = (16, 19, 22)
    fps: float | None = None
    max_frames: int | None = None
    conf: float = 0.25
    pool: str = "person"

    def key(self, identity: WeightsIdentity) -> str:
        """Cache key: a hash of the weights identity and every setting that changes the features."""
        blob = {**asdict(self), "weights": asdict(identity), "layers": list(self.layers), "version": FEATURE_VERSION}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> ExtractorConfig:
        d = dict(d)
        d["layers"] = tuple(d.get("layers", cls.layers))
        return cls(**d)


class FrameFeatures(NamedTuple):
    features: torch.Tensor  # (B, D) float32, on the extractor's device
    boxes: torch.Tensor  # (B, 4) main person's box, xyxy in source pixels
    keypoints: torch.Tensor  # (B, 17, 3) x, y in source pixels and confidence
    score: torch.Tensor  # (B,) detection score of the main person
    present: torch.Tensor  # (B,) bool: score >= conf


def letterbox_shape(height: int, width: int, imgsz: int) -> tuple[int, int, int, int, float]:
    """Resized (h, w), padded (H, W) and scale for a source frame, as Ultralytics' LetterBox(auto=True)."""
    r = imgsz / max(height, width)
    h, w = max(round(height * r), 1), max(round(width * r), 1)
    return h, w, math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE, r


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class FeatureExtractor(nn.Module):
    """YOLO pose model wrapped to give per-frame feature vectors and the main person's pose."""

    def __init__(self, config: ExtractorConfig):
        super().__init__()
        self.config = config
        model, self.identity = load_pose_model(config.weights)
        model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
        n = len(model.model)
        if config.pool not in ("global", "person"):
            raise ValueError(f"pool '{config.pool}' is not 'global' or 'person'")
        layers = list(config.layers)
        if layers != sorted(set(layers)) or not all(0 <= i < n - 1 for i in layers):
            raise ValueError(f"layers {layers} invalid: give increasing indices in 0..{n - 2} of the model's {n} layers")
        # Frames arrive BGR: reorder the first convolution's input channels once instead of every frame.
        first = model.model[0].conv
        first.weight.data = first.weight.data[:, [2, 1, 0]].contiguous()
        self.model = model
        self._kpt_row = 4 + model.model[-1].nc  # rows: box (4), class scores (nc, person first), keypoints
        self._maps: list[torch.Tensor] = []
        for i in layers:  # hooks fire in layer order, so the pooled blocks follow ``layers``
            model.model[i].register_forward_hook(lambda module, inputs, output: self._maps.append(output))
        with torch.inference_mode():
            self.model(torch.zeros(1, 3, STRIDE * 2, STRIDE * 2))
        self.pooled_dim = sum(t.shape[1] for t in self._maps)
        self._maps = []
        self.feature_dim = self.pooled_dim + POSE_DIM

    def _pool(self, maps: list[torch.Tensor], box: torch.Tensor, present: torch.Tensor, height: int) -> list[torch.Tensor]:
        """Average each map globally, or over the cells whose centres lie in ``box`` (input pixels, xyxy)."""
        if self.config.pool == "global":
            return [m.float().mean(dim=(2, 3)) for m in maps]
        out = []
        for m in maps:
            s = height / m.shape[2]  # this map's stride; a cell counts if within half a cell of the box
            ys = (torch.arange(m.shape[2], device=m.device) + 0.5) * s
            xs = (torch.arange(m.shape[3], device=m.device) + 0.5) * s
            in_y = (ys >= box[:, 1:2] - s / 2) & (ys <= box[:, 3:4] + s / 2)
            in_x = (xs >= box[:, 0:1] - s / 2) & (xs <= box[:, 2:3] + s / 2)
            mask = (in_y[:, :, None] & in_x[:, None, :] & present[:, None, None]).to(m.dtype)[:, None]
            out.append((m * mask).sum(dim=(2, 3)).float() / mask.sum(dim=(2, 3)).float().clamp(min=1))
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def place(self, device: str | torch.device = "auto", half: bool = True) -> FeatureExtractor:
        """Move to ``device``; on CUDA run in fp16 when ``half`` (pose and pooled outputs stay fp32)."""
        device = resolve_device(device)
        self.to(device)
        return self.half() if device.type == "cuda" and half else self.float()

    def preprocess(self, frames: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, float, int, int]:
        """uint8 BGR (B, H, W, 3) -> letterboxed float (B, 3, H', W') on the device, scale, left and top pad."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        b, height, width, _ = frames.shape
        h, w, ph, pw, r = letterbox_shape(height, width, self.config.imgsz)
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype)
        if (h, w) != (height, width):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = x.mul_(1 / 255)
        top, left = round((ph - h) / 2 - 0.1), round((pw - w) / 2 - 0.1)
        if (ph, pw) != (h, w):
            x = F.pad(x, (left, pw - w - left, top, ph - h - top), value=PAD_VALUE)
        return x, r, left, top

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor | np.ndarray) -> FrameFeatures:
        """uint8 BGR frames (B, H, W, 3), on any device -> FrameFeatures on the extractor's device."""
        height, width = frames.shape[1:3]
        x, r, left, top = self.preprocess(frames)
        self._maps = []
        out = self.model(x)
        maps, self._maps = self._maps, []
        preds = (out[0] if isinstance(out, (tuple, list)) else out).float()  # (B, 4 + nc + 51, anchors)
        score, best = preds[:, 4].max(dim=1)
        det = preds.gather(2, best.view(-1, 1, 1).expand(-1, preds.shape[1], 1)).squeeze(2)  # (B, 56)
        offset = det.new_tensor([left, top])
        cxcy = (det[:, 0:2] - offset) / r
        wh = det[:, 2:4] / r
        boxes = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1)
        kpts = det[:, self._kpt_row :].reshape(-1, NUM_KEYPOINTS, 3).clone()
        kpts[..., :2] = (kpts[..., :2] - offset) / r
        present = score >= self.config.conf
        xywh = det[:, :4]
        pooled = self._pool(maps, torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1), present, x.shape[2])
        frame_wh = det.new_tensor([width, height])
        box_wh = wh.clamp(min=1.0)
        pose = torch.cat(
            [
                present.float()[:, None],
                score[:, None],
                cxcy / frame_wh,
                wh / frame_wh,
                ((kpts[..., :2] - boxes[:, None, :2]) / box_wh[:, None]).flatten(1),
                kpts[..., 2],
            ],
            dim=1,
        ) * present.float()[:, None]
        features = torch.cat([*pooled, pose], dim=1)
        return FrameFeatures(features, boxes, kpts, score, present)


def mirror_features(x: torch.Tensor) -> torch.Tensor:
    """Features (..., D) of the horizontally mirrored video, as far as the pose block goes.

    Box centre x and keypoint x flip about the centre and left/right keypoints swap; frames with nobody
    stay all-zero. The pooled block is left as it is (a mirrored image's pooled maps are not a
    permutation of the original's), which is fine for augmentation.
    """
    x = x.clone()
    pose = x[..., -POSE_DIM:]
    present = pose[..., 0:1]
    pose[..., 2:3] = (1 - pose[..., 2:3]) * present
    kxy = pose[..., 6 : 6 + 2 * NUM_KEYPOINTS].unflatten(-1, (NUM_KEYPOINTS, 2))[..., FLIP_KEYPOINTS, :].clone()
    kxy[..., 0] = (1 - kxy[..., 0]) * present
    pose[..., 6 : 6 + 2 * NUM_KEYPOINTS] = kxy.flatten(-2)
    pose[..., 6 + 2 * NUM_KEYPOINTS :] = pose[..., 6 + 2 * NUM_KEYPOINTS :][..., FLIP_KEYPOINTS]
    return x
