"""Pose block -> body-relative features: what the body does, wherever the camera stands.

The pose block (``pipeline.data.features``) keeps the box in frame units and the keypoints in box units,
so a pose reads differently from another distance, another side or another frame shape. The blocks here
are computed from it frame by frame (so they stream: no state), in units of the body itself:

* ``centred`` (34): keypoints relative to the hips' midpoint, in torso lengths (hips to shoulders);
* ``bones`` (28): the direction (unit vector) of each limb and torso bone;
* ``angles`` (18): cosine and sine of the angle at elbows, shoulders, hips and knees (8 joints), and of the
  torso's tilt from the vertical (2);
* ``confident`` (17): the keypoint confidences, with which every block above is masked: a keypoint under
  ``MIN_CONF`` gives zeros wherever it takes part.

Geometry needs the frame's aspect (width over height) to make x and y the same unit; the vector does not
carry it, so ``aspect`` is a guess for the source (16:9 by default).
"""

from __future__ import annotations

import torch

from pipeline.data.features import KCONF, KXY, NUM_KEYPOINTS, POSE_DIM
from pipeline.options import OptionError

MIN_CONF = 0.5
BLOCKS = ("centred", "bones", "angles", "confident")
L_SHOULDER, R_SHOULDER, L_HIP, R_HIP = 5, 6, 11, 12
# limbs and torso sides (COCO indices), face left out
BONES = ((5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 11), (6, 12), (5, 6), (11, 12), (0, 5), (0, 6))
# (a, joint, b): the angle at ``joint`` between the bones to a and b
JOINTS = ((5, 7, 9), (6, 8, 10), (7, 5, 11), (8, 6, 12), (5, 11, 13), (6, 12, 14), (11, 13, 15), (12, 14, 16))


def check_blocks(blocks: tuple[str, ...]) -> None:
    """A one-line error for a block this module does not make."""
    unknown = [b for b in blocks if b not in BLOCKS]
    if unknown or len(set(blocks)) != len(blocks):
        raise OptionError(f"--model.body: {', '.join(unknown) or 'a block named twice'}: choose among {', '.join(BLOCKS)}, each once")


def block_dims(blocks: tuple[str, ...]) -> int:
    """Width of the concatenated ``blocks``."""
    sizes = {"centred": 2 * NUM_KEYPOINTS, "bones": 2 * len(BONES), "angles": 2 * len(JOINTS) + 2, "confident": NUM_KEYPOINTS}
    return sum(sizes[b] for b in blocks)


def body_features(x: torch.Tensor, blocks: tuple[str, ...] = BLOCKS, aspect: float = 16 / 9) -> torch.Tensor:
    """Features (..., D) ending in the pose block -> the body-relative ``blocks`` (..., ``block_dims``).
    Frames with nobody give zeros."""
    pose = x[..., -POSE_DIM:].float()
    present = pose[..., :1]
    box = pose[..., 2:6]
    k = pose[..., KXY].unflatten(-1, (NUM_KEYPOINTS, 2))
    # keypoints in frame heights: x scaled by the frame's aspect
    px = (box[..., None, 0] + (k[..., 0] - 0.5) * box[..., None, 2]) * aspect
    py = box[..., None, 1] + (k[..., 1] - 0.5) * box[..., None, 3]
    p = torch.stack([px, py], -1)
    conf = pose[..., KCONF]
    sure = (conf >= MIN_CONF).to(p.dtype) * present
    hips = (p[..., L_HIP, :] + p[..., R_HIP, :]) / 2
    shoulders = (p[..., L_SHOULDER, :] + p[..., R_SHOULDER, :]) / 2
    torso = shoulders - hips
    length = torso.norm(dim=-1, keepdim=True).clamp(min=1e-3)
    out = []
    for name in blocks:
        if name == "centred":
            out.append((((p - hips[..., None, :]) / length[..., None]).clamp(-5, 5) * sure[..., None]).flatten(-2))
        elif name == "bones":
            a, b = [i for i, _ in BONES], [j for _, j in BONES]
            v = p[..., b, :] - p[..., a, :]
            out.append((v / v.norm(dim=-1, keepdim=True).clamp(min=1e-6) * (sure[..., a] * sure[..., b])[..., None]).flatten(-2))
        elif name == "angles":
            a, j, b = (list(t) for t in zip(*JOINTS))
            u, w = p[..., a, :] - p[..., j, :], p[..., b, :] - p[..., j, :]
            cos = (u * w).sum(-1) / (u.norm(dim=-1) * w.norm(dim=-1)).clamp(min=1e-6)
            sin = (u[..., 0] * w[..., 1] - u[..., 1] * w[..., 0]).abs() / (u.norm(dim=-1) * w.norm(dim=-1)).clamp(min=1e-6)
            m = sure[..., a] * sure[..., j] * sure[..., b]
            tilt = torch.stack([-torso[..., 1], torso[..., 0].abs()], -1) / length  # cos and |sin| from the vertical
            both = sure[..., L_SHOULDER : L_SHOULDER + 1].maximum(sure[..., R_SHOULDER : R_SHOULDER + 1]) * sure[..., L_HIP : L_HIP + 1].maximum(sure[..., R_HIP : R_HIP + 1])
            out.append(torch.cat([cos * m, sin * m, tilt * both], -1))
        elif name == "confident":
            out.append(conf * present)
    return torch.cat(out, -1) * present
