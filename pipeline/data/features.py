"""Frames -> features: one YOLO pose forward per frame batch gives a per-frame feature vector.

The vector is ``[pooled backbone features | pose block]``:

* pooled features: average of the outputs of ``layers`` (multi-scale, e.g. the three neck outputs that
  feed the pose head) over the frame or the person's box, taken from the same pass;
* pose block (``POSE_DIM`` = 57): ``present`` flag, detection score, box centre / size relative to the
  frame (4), 17 keypoints normalised to the person box (34) and their confidences (17).

One vector per detected person: every person above ``LOW_CONF`` after NMS (at most ``max_people`` per
frame, the highest-scoring), all from the same pass, so the tracker can follow each of them and the GRU
label each. A frame with nobody gives no row; a track's sequence marks frames where its person was not
seen with an all-zero vector (``present`` 0).

Frames arrive as uint8 BGR and are resized, letterboxed and normalised on the model's device (fp16 on
CUDA). The same extractor object serves training (through the feature cache) and inference.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.weights import WeightsIdentity, load_pose_model
from pipeline.errors import UserError
from pipeline.options import MAX_PEOPLE, OptionError, check_choice, check_range

# The pose model finds people in a short input badly whatever their size: two 110 px tall Weizmann actors side
# by side (360x144) are both found in 2% of frames at 320x128, 90% at 480x192, 99% at 640x256; one actor
# (180x144) at 320x256 in 100% (benchmarks/detection_size.py, README "People as small as the footage has them").
MIN_SHORT = 0.8  # of imgsz: 256 at 320
FEATURE_VERSION = 5  # bump when the meaning of the vector changes; it is part of every cache key
NUM_KEYPOINTS = 17
# the pose block, in order: present, score, box (cx, cy, w, h), keypoints (x, y), confidences
KXY = slice(6, 6 + 2 * NUM_KEYPOINTS)
KCONF = slice(KXY.stop, KXY.stop + NUM_KEYPOINTS)
POSE_DIM = KCONF.stop
STRIDE = 32
MAX_GRAPHS = 4  # CUDA graphs kept per extractor (input shapes), each with its own memory
PAD = 114  # Ultralytics' letterbox grey, of 255
LOW_CONF = 0.1  # detections down to this score reach the tracker (ByteTrack's second association)
# Lower than Ultralytics' 0.7: a waving person's arm-less box (IoU ~0.7 with the full one) otherwise opens a
# second track on the same person (benchmarks/multiperson.py: 9 id switches in 120 people at 0.7, none at 0.5)
NMS_IOU = 0.5
# Boxes apart, poses the same: a person with arms out is also found as their arms-in box (IoU ~0.3), with the
# same head, shoulders, hips and legs; a detection whose keypoint similarity (COCO OKS) with a better one is
# above this is that person again (benchmarks/multiperson.py: 8 id switches in one waving pair without it).
NMS_OKS = 0.5
# COCO's per-keypoint spread (sigmas): how far a keypoint may move and still be the same point
OKS_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089)
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
            is padded to a multiple of 32); with ``max_imgsz``, the smallest one.
        max_imgsz: when set, a source whose frame is wide and short runs at a larger long side, up to this
            cap: the one at which its short side is ``MIN_SHORT`` of ``imgsz`` (``input_size``). None (the
            default here; the configs set 640): every source at ``imgsz``.
        layers: model layer indices whose outputs are average-pooled into the vector (empty: pose only).
        fps: frame rate to sample videos at (None: the source's own).
        max_frames: cap on frames per video (None: no cap).
        conf: detection score from which a person starts a track (weaker detections down to ``LOW_CONF``
            only continue one).
        pool: ``global`` averages each layer's map over the whole frame; ``person`` averages only the
            cells inside each person's box, which keeps the static
            background out of the features.
    """

    weights: str = "yolo11n-pose.pt"
    imgsz: int = 320
    max_imgsz: int | None = None
    layers: tuple[int, ...] = (16, 19, 22)
    fps: float | None = None
    max_frames: int | None = None
    conf: float = 0.25
    pool: str = "person"

    def __post_init__(self) -> None:
        check_range("--data.extractor.imgsz", self.imgsz, 32, 4096)
        check_range("--data.extractor.max_imgsz", self.max_imgsz, self.imgsz, 4096)
        check_range("--data.extractor.fps", self.fps, 0, 1000, above=True)
        check_range("--data.extractor.max_frames", self.max_frames, 1)
        check_range("--data.extractor.conf", self.conf, 0, 1, above=True)
        check_choice("--data.extractor.pool", self.pool, ("person", "global"))
        if self.fps is not None:  # 25 and 25.0 are one setting: one cache key, not two extractions
            object.__setattr__(self, "fps", float(self.fps))

    def key(self, identity: WeightsIdentity) -> str:
        """Cache key: a hash of the weights identity and every setting that changes the features."""
        blob = {**asdict(self), "weights": asdict(identity), "layers": list(self.layers), "version": FEATURE_VERSION}
        if self.max_imgsz is None:  # the features of every source at imgsz, as before the setting: the caches made then
            del blob["max_imgsz"]
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    def input_size(self, height: int, width: int) -> int:
        """The network input's long side for a source ``height`` x ``width``: ``imgsz``, or larger, within
        ``max_imgsz``, where that leaves the short side under ``MIN_SHORT``."""
        if self.max_imgsz is None:
            return self.imgsz
        needed = math.ceil(round(MIN_SHORT * self.imgsz * max(height, width) / max(min(height, width), 1) / STRIDE, 6)) * STRIDE
        return min(self.max_imgsz, max(self.imgsz, needed))

    @classmethod
    def from_dict(cls, d: dict) -> ExtractorConfig:
        d = dict(d)
        d["layers"] = tuple(d.get("layers", cls.layers))
        d.setdefault("max_imgsz", None)  # a record made before the setting: every source at imgsz
        return cls(**d)

    @classmethod
    def from_record(cls, record: dict) -> ExtractorConfig:
        """The settings of an extractor record (``extract.extractor_record``: a checkpoint's or an export's)."""
        return cls.from_dict({k: v for k, v in record.items() if k in cls.__dataclass_fields__})


class Detections(NamedTuple):
    """Every person found in a batch of frames, one row each, on the extractor's device."""

    features: torch.Tensor  # (N, D) float32
    frame: torch.Tensor  # (N,) int64: position of the row's frame in the batch
    boxes: torch.Tensor  # (N, 4) xyxy in source pixels
    keypoints: torch.Tensor  # (N, 17, 3) x, y in source pixels and confidence
    scores: torch.Tensor  # (N,) detection score


# One pass of the pose model short of its box and keypoint branches: the kept layer outputs, the head's
# inputs, and its person logits per level (None for a head that runs whole).
Pass = tuple[dict[int, torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]


class Extractor(Protocol):
    """What inference needs of an extractor, whatever runs it (``FeatureExtractor`` or ``pipeline.inference.runtime``)."""

    config: ExtractorConfig
    identity: WeightsIdentity
    feature_dim: int
    max_people: int

    def __call__(self, frames: torch.Tensor | np.ndarray) -> Detections: ...


def letterbox_shape(height: int, width: int, imgsz: int) -> tuple[int, int, int, int, float]:
    """Resized (h, w), padded (H, W) and scale for a source frame, as Ultralytics' LetterBox(auto=True)."""
    r = imgsz / max(height, width)
    h, w = max(round(height * r), 1), max(round(width * r), 1)
    return h, w, math.ceil(h / STRIDE) * STRIDE, math.ceil(w / STRIDE) * STRIDE, r


class DeviceError(UserError, RuntimeError):
    """A device name torch does not know, or one this machine does not have."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DeviceError(f"device '{device}' is not a device name: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA GPU"
        raise DeviceError(f"device '{device}' is not available: this machine has {have}; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device '{device}' is not supported: use auto, cpu, cuda or cuda:N")
    return dev


class FeatureExtractor(nn.Module):
    """YOLO pose model wrapped to give every person's feature vector, box and keypoints in one pass."""

    def __init__(self, config: ExtractorConfig, max_people: int = MAX_PEOPLE):
        super().__init__()
        self.cuda_graphs = True  # replay the pass from CUDA graphs on a GPU (``_run_pass``)
        self._graphs: dict[tuple, tuple] = {}
        self._seen: dict[tuple, int] = {}
        self._strides: list[float] | None = None
        if max_people < 1:
            raise OptionError(f"max_people must be at least 1, got {max_people}")
        self.config = config
        self.max_people = max_people
        model, self.identity = load_pose_model(config.weights)
        model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
        n = len(model.model)
        layers = list(config.layers)
        if layers != sorted(set(layers)) or not all(isinstance(i, int) and 0 <= i < n - 1 for i in layers):
            raise OptionError(f"--data.extractor.layers {layers} invalid: give increasing indices in 0..{n - 2} of the model's {n} layers")
        # Frames arrive BGR: reorder the first convolution's input channels once instead of every frame.
        first = model.model[0].conv
        first.weight.data = first.weight.data[:, [2, 1, 0]].contiguous()
        self.model = model
        self.head = model.model[-1]
        self.layers = layers
        self._keep = set(model.save) | set(layers) | set(self.head.f)  # layer outputs needed later in the pass
        # The fast head (box and keypoints at the best anchor only) is for the classic Pose head; any other
        # pose head runs whole and is read from its decoded output.
        self._fast_head = type(self.head).__name__ == "Pose" and not getattr(self.head, "end2end", False)
        with torch.inference_mode():
            maps, _ = self._body(torch.zeros(1, 3, STRIDE * 2, STRIDE * 2))
        self.pooled_dim = sum(maps[i].shape[1] for i in layers)
        self.feature_dim = self.pooled_dim + POSE_DIM

    def _apply(self, fn, *args, **kwargs):
        self._graphs.clear()  # .to() / .half() make new weight tensors: captured graphs would read the old ones
        return super()._apply(fn, *args, **kwargs)

    def _run_pass(self, x: torch.Tensor) -> Pass:
        """``_pass``, on CUDA replayed from a CUDA graph once an input shape comes a second time.

        The pass is some 250 small kernels: at a batch of one, launching them costs far more than running
        them (``benchmarks/gpu_check.py``, README "On a GPU"). A graph launches them all at once. A shape seen
        once (a video's last, shorter batch) runs as it is; at most ``MAX_GRAPHS`` shapes are kept, the
        least recently used dropped. A capture that fails turns graphs off for this extractor, with one
        warning, and the pass runs as it is: the outputs are the same kernels' either way."""
        if x.device.type != "cuda" or not self.cuda_graphs:
            return self._pass(x)
        key = (tuple(x.shape), x.dtype, x.device)
        graph = self._graphs.pop(key, None)
        if graph is None:
            self._seen[key] = self._seen.get(key, 0) + 1
            if self._seen[key] < 2:
                if len(self._seen) > 64:
                    self._seen.clear()
                return self._pass(x)
            try:
                graph = self._capture(x)
            except RuntimeError as e:
                self.cuda_graphs = False
                warnings.warn(f"CUDA graph capture failed, running the pose model without graphs: {str(e).splitlines()[0]}", stacklevel=2)
                return self._pass(x)
            if len(self._graphs) >= MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = graph  # most recently used last
        g, static_x, out = graph
        static_x.copy_(x)
        g.replay()
        return out

    def _pass(self, x: torch.Tensor) -> Pass:
        """Every layer but the head, then (for the classic Pose head) its person score at every anchor: all of
        the pass whose shapes depend on the input's alone, so one graph holds it."""
        maps, feats = self._body(x)
        return maps, feats, self.person_logits(feats) if self._fast_head else None

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, Pass]:
        static_x = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the capture: cuDNN's and cuBLAS's own set-up
                self._pass(static_x)
        torch.cuda.current_stream(x.device).wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="thread_local"):  # the decode thread may pin memory meanwhile
            out = self._pass(static_x)
        return g, static_x, out

    def _body(self, x: torch.Tensor) -> tuple[dict[int, torch.Tensor], list[torch.Tensor]]:
        """Run every layer but the head (as Ultralytics' ``_predict_once``); return kept outputs and head inputs."""
        y: dict[int, torch.Tensor] = {}
        for m in self.model.model[:-1]:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            if m.i in self._keep:
                y[m.i] = x
        return y, [y[j] for j in self.head.f]

    def _detect(self, feats: list[torch.Tensor], logits: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every person per image, before NMS: image index (N,), score (N,), box xyxy (N, 4) and keypoints
        (N, 17, 3) in input pixels (``find_people``, with this model's head; ``logits``: its person scores,
        from ``_pass``)."""
        head = self.head
        if logits is None:
            out = head(feats)
            preds = (out[0] if isinstance(out, (tuple, list)) else out).float()  # (B, 4 + nc + 51, anchors), xywh
            image, anchor = select(preds[:, 4].clamp(1e-6, 1 - 1e-6).logit(), self.max_people)
            det = preds[image, :, anchor]
            xy, wh = det[:, 0:2], det[:, 2:4]
            kpts = det[:, 4 + head.nc :].reshape(-1, NUM_KEYPOINTS, 3)
            return image, det[:, 4], torch.cat([xy - wh / 2, xy + wh / 2], 1), kpts
        return find_people(logits, feats, self.branches, self.strides, self.max_people)

    def person_logits(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The head's person score at every anchor, per level: logits (B, h, w)."""
        return [self.head.cv3[i](f)[:, 0].float() for i, f in enumerate(feats)]

    def branches(self, patches: dict[int, torch.Tensor]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The head's box and keypoint branches at candidate anchors: per level, 5x5 patches (N, C, 5, 5) of
        its input -> box distances (N, 4: left, top, right, bottom in cells) and raw keypoints (N, 51) at the
        patch centre."""
        head, out = self.head, {}
        for i, p in patches.items():
            n, rows = len(p), slice(None)  # (no slice when unpadded: an export traces this with a fixed count)
            if p.is_cuda and n & (n - 1):  # the count of candidates changes every batch: pad it as ``forward`` pads the batch
                p, rows = torch.cat([p, p.new_zeros(padded_batch(n) - n, *p.shape[1:])]), slice(n)
            box = head.cv2[i](p)[rows, :, 2, 2]
            out[i] = head.dfl(box[:, :, None]).float()[:, :, 0], head.cv4[i](p)[rows, :, 2, 2].float()  # in the head's dtype (fp16 on CUDA)
        return out

    @property
    def strides(self) -> list[float]:
        """The head's strides as numbers, read once: the head keeps them in a tensor on the device, and
        reading that every frame is three waits for the GPU."""
        if self._strides is None:
            self._strides = [float(s) for s in self.head.stride]
        return self._strides

    def input_size(self, height: int, width: int) -> int:
        """The network input's long side for a source ``height`` x ``width`` (``ExtractorConfig.input_size``)."""
        return self.config.input_size(height, width)

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
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        # on the CPU, resize the uint8 frames: 10x faster than making a float copy of a full HD batch first
        size = self.config.input_size(*x.shape[2:])
        x, r, left, top = _letterbox(x if self.device.type == "cpu" else x.to(self.dtype), size)
        return x.to(self.dtype).mul_(1 / 255), r, left, top

    @torch.inference_mode()
    def forward(self, frames: torch.Tensor | np.ndarray) -> Detections:
        """uint8 BGR frames (B, H, W, 3), on any device -> every person's features, on the extractor's device."""
        x, r, left, top = self.preprocess(frames)
        b = x.shape[0]
        if x.device.type == "cuda" and b & (b - 1):  # a batch of zeros' pictures up to the next power of two (``padded_batch``)
            x = torch.cat([x, x.new_zeros(padded_batch(b) - b, *x.shape[1:])])
        maps, feats, logits = self._run_pass(x)
        if x.shape[0] != b:  # every layer works on each picture alone: the padding's outputs are dropped, unseen
            maps, feats = {i: m[:b] for i, m in maps.items()}, [f[:b] for f in feats]
            logits = None if logits is None else [lv[:b] for lv in logits]
        found = self._detect(feats, logits)
        return finish(found, [maps[i] for i in self.layers], self.config.pool, self.max_people, (x.shape[2], r, left, top), frames.shape[1:3])


def padded_batch(b: int) -> int:
    """The batch a GPU forward of ``b`` pictures runs at: the next power of two.

    Each new input shape costs the GPU set-up for every layer (cuDNN's execution plans; a CUDA graph), and a
    file run's last batch of every video is a new size: the GPU check saw one process label 640x480 videos
    at 59 frames/s, about a second per video, while the pass itself runs at 5000. At most eight sizes up
    to 128 are ever set up; the padding costs at most as many pictures as the batch holds."""
    return 1 << (b - 1).bit_length()


def finish(
    found: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], maps: list[torch.Tensor], pool: str,
    max_people: int, letterboxed: tuple[int, float, int, int], size: tuple[int, int],
) -> Detections:  # fmt: skip
    """Candidates (image, score, box, keypoints in input pixels) -> NMS, pooling of ``maps`` over each kept
    person (``pool``), the pose block: :class:`Detections` in the source's pixels. ``letterboxed``: the
    input's height, the scale, left and top pad; ``size``: the source's height and width."""
    image, score, box, kpts = found
    keep = nms(image, score, box, kpts, max_people)
    image, score, box, kpts = image[keep], score[keep], box[keep], kpts[keep]
    height, r, left, top = letterboxed
    pooled = pool_people(maps, image, box, pool, height)
    offset = box.new_tensor([left, top])
    boxes = (box.view(-1, 2, 2) - offset).flatten(1) / r
    kpts = torch.cat([(kpts[..., :2] - offset) / r, kpts[..., 2:]], -1)
    cxcy, wh = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    frame_wh = box.new_tensor([size[1], size[0]])
    pose = torch.cat([torch.ones_like(score)[:, None], score[:, None], cxcy / frame_wh, wh / frame_wh, body_shape(kpts, boxes)], 1)
    return Detections(torch.cat([*pooled, pose], dim=1), image, boxes, kpts, score)


def pool_people(maps: list[torch.Tensor], image: torch.Tensor, box: torch.Tensor, pool: str, height: int) -> list[torch.Tensor]:
    """Average each map (B, C, h, w) over the whole frame (``global``) or over the cells whose centres lie
    within half a cell of each person's ``box`` (``person``; input pixels, the input ``height`` high): (N, C)
    per map."""
    if pool == "global":
        return [m.float().mean(dim=(2, 3))[image] for m in maps]
    out = []
    for m in maps:
        mask = box_cells(box, m.shape[2], m.shape[3], height / m.shape[2]).to(m.dtype)  # (N, h, w)
        total = torch.einsum("nchw,nhw->nc", m[image], mask).float()
        out.append(total / mask.sum(dim=(1, 2)).float().clamp(min=1)[:, None])
    return out


Branches = Callable[[dict[int, torch.Tensor]], dict[int, tuple[torch.Tensor, torch.Tensor]]]


def select(scores: torch.Tensor, max_people: int, candidates: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(image, anchor) of the best anchors per image (``candidate_count``) whose score logit is at least
    ``LOW_CONF``'s (among ``candidates`` when given)."""
    if candidates is not None:
        scores = scores.masked_fill(~candidates, float("-inf"))
    k = min(scores.shape[1], candidate_count(max_people))
    top, anchor = scores.topk(k, dim=1)
    keep = top >= math.log(LOW_CONF / (1 - LOW_CONF))
    image = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(anchor)
    return image[keep], anchor[keep]


def find_people(
    levels: list[torch.Tensor], feats: list[torch.Tensor], branches: Branches, strides: list[float], max_people: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every person per image, before NMS: image index (N,), score (N,), box xyxy (N, 4) and keypoints
    (N, 17, 3) in input pixels, from the person logits (B, h, w) and the head's inputs of each level.

    Candidates are the anchors that beat their 3x3 neighbours (one per person and scale, so NMS has little
    to do). The box and keypoint ``branches`` run only at the candidates, on the 5x5 cell patch their two
    3x3 convolutions see (zero-padded like the full map): what the full head gives at those anchors, at a
    fraction of its cost. The same code serves every backend (``pipeline.inference.runtime``).
    """
    peaks = [lv == F.max_pool2d(lv[:, None], 3, 1, 1)[:, 0] for lv in levels]
    logits = torch.cat([lv.flatten(1) for lv in levels], 1)
    image, best = select(logits, max_people, torch.cat([p.flatten(1) for p in peaks], 1))
    n = best.shape[0]
    anchor = torch.empty(n, 2, device=best.device)
    stride = torch.empty(n, 1, device=best.device)
    start, k, patches, where = 0, torch.arange(5, device=best.device), {}, {}
    for i, f in enumerate(feats):
        h, w = f.shape[2:]
        sel = ((best >= start) & (best < start + h * w)).nonzero().squeeze(1)
        if len(sel):
            cell = best[sel] - start
            gy, gx = cell // w, cell % w
            rows, cols = (gy[:, None] + k - 2)[:, :, None], (gx[:, None] + k - 2)[:, None, :]
            inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).to(f.dtype)[:, None]  # zero padding, no padded copy
            patch = f[image[sel][:, None, None], :, rows.clamp(0, h - 1), cols.clamp(0, w - 1)].permute(0, 3, 1, 2)
            patches[i] = (patch * inside).contiguous()
            anchor[sel] = torch.stack([gx, gy], 1).float() + 0.5
            stride[sel] = strides[i]
            where[i] = sel
        start += h * w
    dist = torch.zeros(n, 4, device=best.device)
    kp = torch.zeros(n, NUM_KEYPOINTS * 3, device=best.device)
    for i, (d, kpt) in branches(patches).items():
        dist[where[i]], kp[where[i]] = d.to(dist.device), kpt.to(kp.device)
    boxes = torch.cat([anchor - dist[:, :2], anchor + dist[:, 2:]], 1) * stride
    kp = kp.view(n, NUM_KEYPOINTS, 3)
    xy = (kp[..., :2] * 2.0 + (anchor[:, None] - 0.5)) * stride[:, None]
    return image, logits[image, best].sigmoid(), boxes, torch.cat([xy, kp[..., 2:].sigmoid()], -1)


def candidate_count(max_people: int) -> int:
    """Candidates kept per image before NMS: ``4 * max_people``, and at least 64, so that a small cap still
    finds that many people once NMS has merged the anchors of one person."""
    return max(4 * max_people, 64)


def _letterbox(x: torch.Tensor, imgsz: int) -> tuple[torch.Tensor, float, int, int]:
    """Frames (B, C, H, W), values 0..255 -> resized to ``imgsz`` on the long side and centred in the grey
    padding to multiples of 32 (Ultralytics' LetterBox(auto=True)); scale, left and top pad."""
    height, width = x.shape[2:]
    h, w, ph, pw, r = letterbox_shape(height, width, imgsz)
    if (h, w) != (height, width):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    top, left = round((ph - h) / 2 - 0.1), round((pw - w) / 2 - 0.1)
    if (ph, pw) != (h, w):
        x = F.pad(x, (left, pw - w - left, top, ph - h - top), value=PAD)
    return x, r, left, top


def letterbox(frames: torch.Tensor | np.ndarray, imgsz: int) -> tuple[torch.Tensor, float, int, int]:
    """uint8 BGR (B, H, W, 3) -> letterboxed uint8 (B, H', W', 3), as ``FeatureExtractor.preprocess`` makes
    them on the CPU before scaling to 0..1: the exported extractor's input (``pipeline.inference.export``); scale, left
    and top pad."""
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    x, r, left, top = _letterbox(x.permute(0, 3, 1, 2), imgsz)
    return x.permute(0, 2, 3, 1).contiguous(), r, left, top


def nms(image: torch.Tensor, score: torch.Tensor, box: torch.Tensor, kpts: torch.Tensor, max_people: int) -> torch.Tensor:
    """Indices of the detections NMS keeps, at most ``max_people`` per image, grouped by image, best first:
    box NMS, then any detection whose pose matches a better one in its image (``NMS_OKS``) goes too."""
    from torchvision.ops import batched_nms

    keep = batched_nms(box, score, image, NMS_IOU)  # by decreasing score
    keep = keep[torch.sort(image[keep], stable=True).indices]  # grouped by image, still best first
    same = (pose_similarity(kpts[keep], box[keep]) > NMS_OKS) & (image[keep][:, None] == image[keep][None])
    keep = keep[~same.triu(1).any(0)]  # a row earlier in the order (better, same image) claims it
    img = image[keep]
    first = torch.searchsorted(img, img)  # index of each image's first row
    return keep[torch.arange(len(keep), device=keep.device) - first < max_people]


def box_cells(box: torch.Tensor, h: int, w: int, stride: float) -> torch.Tensor:
    """Boxes (N, 4) xyxy in input pixels -> (N, h, w) masks of the cells of a stride-``stride`` map whose
    centres lie within half a cell of each box."""
    ys = (torch.arange(h, device=box.device) + 0.5) * stride
    xs = (torch.arange(w, device=box.device) + 0.5) * stride
    in_y = (ys >= box[:, 1:2] - stride / 2) & (ys <= box[:, 3:4] + stride / 2)
    in_x = (xs >= box[:, 0:1] - stride / 2) & (xs <= box[:, 2:3] + stride / 2)
    return in_y[:, :, None] & in_x[:, None, :]


def body_shape(kpts: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Keypoints (N, 17, 3) and boxes (N, 4) in pixels -> (N, POSE_DIM - 6): keypoints relative to the box
    (0..1 inside it) and their confidences."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
    return torch.cat([((kpts[..., :2] - boxes[:, None, :2]) / wh[:, None]).flatten(1), kpts[..., 2]], 1)


def pose_similarity(kpts: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """COCO object keypoint similarity between every two detections (N, N), over the keypoints both see
    (confidence > 0.5), at the scale of the smaller box; 0 where they share fewer than 4 keypoints."""
    seen = kpts[..., 2] > 0.5  # (N, 17)
    both = (seen[:, None] & seen[None]).float()
    d2 = (kpts[:, None, :, :2] - kpts[None, :, :, :2]).pow(2).sum(-1)  # (N, N, 17)
    area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).clamp(min=1.0)
    scale = torch.minimum(area[:, None], area[None])[..., None]
    var = (2 * kpts.new_tensor(OKS_SIGMAS)) ** 2
    oks = (torch.exp(-d2 / (2 * scale * var)) * both).sum(-1) / both.sum(-1).clamp(min=1)
    return oks * (both.sum(-1) >= 4)


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
    kxy = pose[..., KXY].unflatten(-1, (NUM_KEYPOINTS, 2))[..., FLIP_KEYPOINTS, :].clone()
    kxy[..., 0] = (1 - kxy[..., 0]) * present
    pose[..., KXY] = kxy.flatten(-2)
    pose[..., KCONF] = pose[..., KCONF][..., FLIP_KEYPOINTS]
    return x


def reframe(x: torch.Tensor, zoom: float, dx: float, dy: float) -> torch.Tensor:
    """Features (..., D) as if the camera had zoomed by ``zoom`` about the frame's centre and the picture
    moved by (``dx``, ``dy``) frame widths / heights: only the box's place and size in the frame change
    (the body's shape is relative to the box). Frames with nobody stay all-zero."""
    x = x.clone()
    pose = x[..., -POSE_DIM:]
    present = pose[..., 0:1]
    pose[..., 2:4] = ((pose[..., 2:4] - 0.5) * zoom + 0.5 + pose.new_tensor([dx, dy])) * present
    pose[..., 4:6] = pose[..., 4:6] * zoom
    return x


def tilted(x: torch.Tensor, angle: float, shear: float = 0.0, aspect: float = 16 / 9) -> torch.Tensor:
    """Features (..., D) as if the camera had rolled by ``angle`` radians and seen the body sheared by
    ``shear`` (x moves by ``shear`` times its height from the box's centre): a slanted floor, a tilted phone,
    another perspective. The keypoints turn about the box's centre in pixels (``aspect``, the frame's width
    over height, makes x and y one unit; training passes each video's own); the box keeps its centre
    and grows or shrinks with the confident keypoints' extent, as a detector's box follows the body. Frames
    with nobody stay all-zero; the pooled block is left as it is."""
    x = x.clone()
    pose = x[..., -POSE_DIM:]
    present, box, conf = pose[..., 0:1], pose[..., 2:6], pose[..., KCONF]
    k = pose[..., KXY].unflatten(-1, (NUM_KEYPOINTS, 2))
    unit = box.new_tensor([aspect, 1.0])
    size = box[..., None, 2:4] * unit  # the box in frame heights
    p = (k - 0.5) * size  # keypoints about the box's centre, in frame heights
    c, s = math.cos(angle), math.sin(angle)
    turn = p.new_tensor([[c, -s], [s, c]]) @ p.new_tensor([[1.0, shear], [0.0, 1.0]])
    q = p @ turn.T
    sure = (conf > 0.5)[..., None]
    before, after = _extent(p, sure), _extent(q, sure)
    grow = torch.where(before > 1e-3, after / before.clamp(min=1e-3), torch.ones_like(before)).clamp(0.5, 2.0)
    grow = torch.where(sure.sum(-2) >= 2, grow, torch.ones_like(grow))
    wh = (size[..., 0, :] * grow / unit).clamp(max=1.0)  # the new box in frame units
    pose[..., KXY] = ((q / (wh * unit).clamp(min=1e-6)[..., None, :] + 0.5) * present[..., None]).flatten(-2)
    pose[..., 4:6] = wh * present
    return x


def _extent(p: torch.Tensor, sure: torch.Tensor) -> torch.Tensor:
    """Width and height (..., 2) of the points (..., K, 2) where ``sure`` (..., K, 1)."""
    return (p.masked_fill(~sure, -1e3).amax(-2) - p.masked_fill(~sure, 1e3).amin(-2)).clamp(min=0)
