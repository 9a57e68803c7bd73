"""Look inside the GRU: the cell written out from its equations, returning its gates.

For inspection only; training and streaming keep ``torch.nn.GRU`` (cuDNN on a GPU). With PyTorch's
weight layout (``weight_ih_l{k}`` stacks the reset, update and candidate rows), per layer and frame::

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))     candidate state
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}                          new state

so ``z_t`` near 1 keeps the memory and near 0 replaces it with the candidate; ``r_t`` near 0 makes the
candidate ignore the past.
"""

from __future__ import annotations

import torch
from torch import nn


class ExplicitGRU(nn.Module):
    """A (multi-layer, unidirectional, batch-first) GRU computed step by step, with its gate values."""

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError("ExplicitGRU mirrors unidirectional, batch-first GRUs with biases")
        self.hidden_size, self.num_layers = gru.hidden_size, gru.num_layers
        for k in range(gru.num_layers):  # shared tensors, not copies: always the GRU's current weights
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                self.register_buffer(f"{name}_l{k}", getattr(gru, f"{name}_l{k}").detach(), persistent=False)

    def cell(self, k: int, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of layer ``k``: ``x`` (B, D), ``h`` (B, H) -> new h, reset gate, update gate."""
        gi = x @ getattr(self, f"weight_ih_l{k}").T + getattr(self, f"bias_ih_l{k}")
        gh = h @ getattr(self, f"weight_hh_l{k}").T + getattr(self, f"bias_hh_l{k}")
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, r, z

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` (B, T, D) -> outputs (B, T, H), final state (L, B, H), and gates
        ``{"reset": (L, B, T, H), "update": (L, B, T, H)}``."""
        b, t, _ = x.shape
        h = list(h0.unbind(0)) if h0 is not None else [x.new_zeros(b, self.hidden_size)] * self.num_layers
        resets, updates, outs = [], [], []
        for s in range(t):
            inp, rs, zs = x[:, s], [], []
            for k in range(self.num_layers):
                h[k], r, z = self.cell(k, inp, h[k])
                inp = h[k]
                rs.append(r)
                zs.append(z)
            outs.append(inp)
            resets.append(torch.stack(rs))
            updates.append(torch.stack(zs))
        gates = {"reset": torch.stack(resets, 2), "update": torch.stack(updates, 2)}
        return torch.stack(outs, 1), torch.stack(h), gates


def mean_gate_activity(gates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per frame, each gate's mean over layers and units: ``{"update": (B, T), "reset": (B, T)}``."""
    return {name: g.mean(dim=(0, 3)) for name, g in (("update", gates["update"]), ("reset", gates["reset"]))}
