"""Normalised pose features -> how fast they change: the motion stream beside the joints (issue 31).

A recurrent cell can learn to difference consecutive frames, but it must hold the last frame in its state to
do it, and training's feature noise (``--data.noise``, 0.1 of each feature's spread, drawn anew every frame)
is of the size of a box's movement from one frame to the next. So the change is given to it: each frame's
pose features minus their decayed mean over the frames before, over the frames the person was seen in.
At ``decay`` 0.75 (a horizon of about 4 frames, 0.16 s at 25 fps) a steady movement reads about 4 times its
change per frame while the noise reads about as one frame's. Nobody seen now, or nobody in the last frames:
no change (zeros), so a lost frame, a track's first frame and a crop's first frame read as standing still,
not as a jump.

Measured (README "Velocity: a motion stream"): level on pushfit's new scenes, a little worse on the lab
sets, so it is an option, off by default.

It streams in O(1): the decayed means are ``running_mean``'s, carried as its start (the fill, the weighted
mean of the features, and the share of recent frames the person was seen in).
"""

from __future__ import annotations

import torch

from pipeline.model.running import running_mean

DECAY = 0.75
MIN_SEEN = 0.1  # the recent frames' share with the person seen, under which the mean is too old to move from


def carry_dim(width: int) -> int:
    """Size of the state carried between frames for ``width`` features: the fill, their mean, the seen share."""
    return 2 + width


def velocity(
    z: torch.Tensor, seen: torch.Tensor, start: torch.Tensor | None, decay: float = DECAY
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (B, T, P) and whether the person is seen (B, T) -> the change of each frame (B, T, P), and
    the carry after each frame (B, T, ``carry_dim(P)``) for the next call's ``start`` (None: nothing before)."""
    w = seen.to(z.dtype)[..., None]
    mean, fill = running_mean(torch.cat([z * w, w], -1), start, decay)
    carry = torch.cat([fill, mean], -1)
    first = carry.new_zeros(carry.shape[0], carry.shape[2]) if start is None else start
    before = torch.cat([first[:, None], carry[:, :-1]], 1)
    share = before[..., -1:]  # of the decayed weight before this frame, how much had the person seen
    recent = before[..., 1:-1] / share.clamp(min=1e-6)  # their decayed mean over the frames seen
    moving = w * (share > MIN_SEEN).to(z.dtype)
    return (z - recent) * moving, carry
