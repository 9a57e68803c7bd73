"""Cached sequences -> per-frame class scores: the temporal classifier.

``normalise -> project -> recurrent cell -> head`` gives a score for every frame, from what the cell has
seen so far. The cell is unidirectional, so the same model streams: ``step`` on one frame with the hidden
state carried equals the full-sequence ``forward`` at that frame. A frame probe (``pipeline.model.frame_probe``,
a linear model of the normalised frame alone) can be fused in: the frame's probabilities are then
``(1 - share) * GRU + share * probe``, returned as their logarithm, so whatever takes a softmax of the
scores (evaluation, streaming, export) gets the fused probabilities. Normalisation statistics and the probe
are buffers, so they travel inside the checkpoint; the share is a plain number that the classifier keeps
(chosen on validation, saved with its other choices, ``pipeline.model.classifier``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.model.frame_probe import fit_probe
from pipeline.options import check_choice, check_range

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # LSTM carries (h, c)


class ActionRNN(nn.Module):
    """Input normalisation and projection, dropout, a GRU (or LSTM / plain RNN), a classification head.

    ``pooled_dim``: size of the leading pooled-backbone block of the input; ``pooled_dropout``: chance of
    zeroing that whole block for a training sequence (1: always, in evaluation too: the block is unused).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        proj_dim: int = 128,
        dropout: float = 0.3,
        input_dropout: float = 0.1,
        cell: str = "gru",
        pooled_dim: int = 0,
        pooled_dropout: float = 0.0,
    ):
        super().__init__()
        check_choice("--model.cell", cell, sorted(CELLS))
        for name, v in (("hidden_size", hidden_size), ("num_layers", num_layers), ("proj_dim", proj_dim)):
            check_range(f"--model.{name}", v, 1, 4096)
        for name, v in (("dropout", dropout), ("input_dropout", input_dropout)):
            check_range(f"--model.{name}", v, 0, 0.99)
        check_range("--model.pooled_dropout", pooled_dropout, 0, 1)
        self.pooled_dim, self.pooled_dropout = pooled_dim, pooled_dropout
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("std", torch.ones(input_dim))
        self.proj = nn.Sequential(
            nn.Dropout(input_dropout), nn.Linear(input_dim, proj_dim), nn.LayerNorm(proj_dim), nn.GELU(), nn.Dropout(dropout)
        )
        self.rnn = CELLS[cell](proj_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))
        # the frame probe: fitted (fit_probe), not trained
        self.register_buffer("probe_weight", torch.zeros(num_classes, input_dim))
        self.register_buffer("probe_bias", torch.zeros(num_classes))
        self.register_buffer("probe_l2", torch.zeros(()))  # the L2 weight its fit chose (for the report)
        self.share = 0.0  # the probe's share of the fused probabilities; 0: the GRU alone

    @torch.no_grad()
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-4))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name in ("probe_weight", "probe_bias", "probe_l2"):  # checkpoints made before the probe: none
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) -> standardised, the pooled block zeroed where this model does not use it."""
        x = (x - self.mean) / self.std
        if self.pooled_dropout >= 1 and self.pooled_dim:
            x = torch.cat([torch.zeros_like(x[..., : self.pooled_dim]), x[..., self.pooled_dim :]], dim=-1)
        return x

    @torch.no_grad()
    def fit_probe(self, train: list[torch.Tensor], train_labels: list[int], val: list[torch.Tensor], val_labels: list[int]) -> None:
        """Fit the frame probe on these videos' features (after ``set_normalization``)."""
        norm = [self.normalise(v.to(self.mean.device).float()) for v in (*train, *val)]
        w, b, l2 = fit_probe(norm[: len(train)], train_labels, norm[len(train) :], val_labels, len(self.probe_bias))
        self.probe_l2.fill_(l2)
        self.probe_weight.copy_(w)
        self.probe_bias.copy_(b)

    def probe_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) -> the frame probe's per-frame probabilities (B, T, C)."""
        return F.linear(self.normalise(x), self.probe_weight, self.probe_bias).softmax(-1)

    def scores(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) and the cell's outputs for them -> per-frame scores (B, T, C): the head's
        logits, or with a share for the probe the log of ``(1 - share) * GRU + share * probe``."""
        logits = self.head(out)
        if self.share <= 0:
            return logits
        return ((1 - self.share) * logits.softmax(-1) + self.share * self.probe_probs(x)).clamp(min=1e-12).log()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) -> the recurrent cell's input (B, T, proj_dim): normalise and project."""
        x = self.normalise(x)
        if self.training and 0 < self.pooled_dropout < 1 and self.pooled_dim:
            # drop the appearance block of whole sequences so the model cannot lean on it alone
            keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.pooled_dropout).to(x.dtype)
            x = torch.cat([x[..., : self.pooled_dim] * keep, x[..., self.pooled_dim :]], dim=-1)
        return self.proj(x)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden]:
        """``x`` (B, T, D) -> per-frame logits (B, T, C) and the final hidden state.

        With ``lengths``, padded frames are skipped (packed sequence) and the hidden state returned is
        each sequence's state at its own last frame; logits at padded positions are meaningless.
        """
        out, hidden = self.outputs(x, lengths, hidden)
        return self.scores(x, out), hidden

    def outputs(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, Hidden]:
        """As ``forward``, but the cell's per-frame outputs (B, T, hidden) instead of the logits: the state
        space that the prototype rule measures (``pipeline.model.novelty``)."""
        z = self.embed(x)
        if lengths is not None:
            packed = pack_padded_sequence(z, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, hidden = self.rnn(packed, hidden)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, hidden = self.rnn(z, hidden)
        return out, hidden

    def step(self, x_t: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """One frame (B, D) -> logits (B, C) and the next hidden state: the streaming form of ``forward``."""
        logits, hidden = self.forward(x_t[:, None], hidden=hidden)
        return logits[:, 0], hidden
