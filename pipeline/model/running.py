"""Decayed running means that stream: the summary's (``pipeline.model.rnn``) and the motion stream's
(``pipeline.model.velocity``), computed over a whole sequence at once or resumed frame by frame from a carried
start, with the same result."""

from __future__ import annotations

import torch


def running_mean(v: torch.Tensor, start: torch.Tensor | None, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (B, T, F) -> after each frame, their mean weighted ``decay ** age`` (B, T, F) and its fill (B, T, 1).

    ``start`` (B, 1 + F): the fill and mean carried from earlier frames (None: none). The fill is the weight
    summed so far as a share of its limit ``1 / (1 - decay)``: 1 for a long history. Computed in chunks of
    that many frames, each in closed form (a cumulative sum scaled by ``decay ** -t`` stays within e)."""
    b, t, f = v.shape
    limit = 1.0 / (1.0 - decay)
    s = v.new_zeros(b, 1 + f) if start is None else torch.cat([start[:, :1] * limit, start[:, 1:] * start[:, :1] * limit], 1)
    sums = []
    for chunk in torch.cat([v.new_ones(b, t, 1), v], -1).split(max(1, int(limit)), dim=1):
        p = decay ** torch.arange(1, chunk.shape[1] + 1, device=v.device, dtype=v.dtype)[None, :, None]
        sums.append(p * (s[:, None] + torch.cumsum(chunk / p, 1)))
        s = sums[-1][:, -1]
    seq = torch.cat(sums, 1)
    weight = seq[..., :1]
    return seq[..., 1:] / weight.clamp(min=1e-12), weight / limit
