"""Cached sequences -> per-frame class scores: the temporal classifier.

``normalise -> project -> recurrent cell -> head`` gives a score for every frame, from what the cell has
seen so far. The cell is unidirectional, so the same model streams: ``step`` on one frame with the hidden
state carried equals the full-sequence ``forward`` at that frame. A frame probe (``pipeline.model.frame_probe``,
a linear model of the normalised frame alone) can be fused in: the frame's probabilities are then
``(1 - share) * GRU + share * probe``, returned as their logarithm, so whatever takes a softmax of the
scores (evaluation, streaming, export) gets the fused probabilities. Normalisation statistics and the probe
are buffers, so they travel inside the checkpoint; the share is a plain number that the classifier keeps
(chosen on validation, saved with its other choices, ``pipeline.model.classifier``).

Summary (``summary_frames`` > 0): beside its last state, the head reads what ignores order: the running mean
and spread of the frame embeddings and the running mean of the cell's outputs, averaged over the last
``summary_frames`` or so (an exponentially decaying mean, so a live person's new action is not drowned by
an hour of old ones). The probe then reads the running mean of the normalised frames instead of the single
frame: the time-blind baseline (``benchmarks/time_blind_baseline.py``), fitted the same way and streaming,
so at a validation-chosen share of 1 the model is that baseline; ``summary_head`` False keeps the summary
for the probe alone (the head reads the cell's state, as without a summary). It is O(1) a frame: the running means
ride in the recurrent state, after the cell's own ``hidden_size`` values on the last layer, so everything
that carries the state (streaming, export, live) carries them unchanged; ``state_shape`` is its size.

Velocity (``velocity`` True): the cell also reads how fast the pose features (and the body blocks) change
(``pipeline.model.velocity``), the motion stream beside the joints; its carried means ride in the state after
the summary's. The probe and the summary's probe input do not read it: the probe stays the time-blind model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.data.features import POSE_DIM
from pipeline.model.body import block_dims, body_features, check_blocks
from pipeline.model.frame_probe import fit_probe
from pipeline.model.running import running_mean
from pipeline.model.velocity import carry_dim, velocity
from pipeline.options import OptionError, check_choice, check_range

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # LSTM carries (h, c)


class Summarise(nn.Module):
    """Per-frame representation (cell output, fill, running means) -> the head's input: the cell's output,
    the embeddings' running mean and standard deviation, and the outputs' running mean."""

    def __init__(self, hidden_size: int, proj_dim: int):
        super().__init__()
        self.hidden_size, self.proj_dim = hidden_size, proj_dim

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        h, p = self.hidden_size, self.proj_dim
        mean, square, out_mean = rep[..., h + 1 : h + 1 + p], rep[..., h + 1 + p : h + 1 + 2 * p], rep[..., h + 1 + 2 * p : 2 * h + 1 + 2 * p]
        sd = (square - mean * mean).clamp(min=0).add(1e-4).sqrt()
        return torch.cat([rep[..., :h], mean, sd, out_mean], -1)


class Cell(nn.Module):
    """Per-frame representation (cell output, then the summary) -> the cell's output alone: a head that
    leaves the summary to the probe."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        return rep[..., : self.hidden_size]


class ActionRNN(nn.Module):
    """Input normalisation and projection, dropout, a GRU (or LSTM / plain RNN), a classification head.

    ``pooled_dim``: size of the leading pooled-backbone block of the input; ``pooled_dropout``: chance of
    zeroing that whole block for a training sequence (1: always, in evaluation too: the block is unused).
    ``summary_frames``: the time-blind summary's horizon in frames (see the module's docstring); 0: none.
    ``summary_head``: whether the head reads the summary beside the cell's state (False: the probe alone does).
    ``body``: body-relative blocks (``pipeline.model.body``) computed from the pose block of each frame and
    appended to it before normalisation (so the probe and the summary read them too); ``aspect``: the frame
    shape they assume. ``framing`` False: the box's place and size in the frame are hidden (zeroed after
    normalisation), so the model reads the body, not where the camera put it. ``velocity``: the cell also
    reads the change of the pose features and body blocks (``pipeline.model.velocity``).
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
        summary_frames: int = 0,
        body: tuple[str, ...] = (),
        aspect: float = 16 / 9,
        framing: bool = True,
        summary_head: bool = True,
        velocity: bool = False,
    ):
        super().__init__()
        check_choice("--model.cell", cell, sorted(CELLS))
        for name, v in (("hidden_size", hidden_size), ("num_layers", num_layers), ("proj_dim", proj_dim)):
            check_range(f"--model.{name}", v, 1, 4096)
        for name, v in (("dropout", dropout), ("input_dropout", input_dropout)):
            check_range(f"--model.{name}", v, 0, 0.99)
        check_range("--model.pooled_dropout", pooled_dropout, 0, 1)
        if summary_frames:
            check_range("--model.summary_frames", summary_frames, 2, 1_000_000)
        check_blocks(body)
        check_range("--model.aspect", aspect, 0.2, 5)
        if velocity and input_dim < POSE_DIM:
            raise OptionError(f"--model.velocity needs the pose block: the features have {input_dim} values, the pose block alone {POSE_DIM}")
        self.summary_frames = summary_frames
        self.body, self.aspect, self.framing = tuple(body), aspect, framing
        self.input_dim = input_dim
        width = self.width = input_dim + block_dims(self.body)  # what is normalised: the features, then the body blocks
        # the running means that ride in the state: fill, embedding, its square, cell output, normalised input
        self.summary_dim = 1 + 2 * proj_dim + hidden_size + width if summary_frames else 0
        self.pose_start = input_dim - POSE_DIM  # the pose block, then the body blocks: what velocity reads
        self.velocity_dim = width - self.pose_start if velocity else 0
        self.carry_dim = carry_dim(self.velocity_dim) if velocity else 0  # its means, riding after the summary's
        self.pooled_dim, self.pooled_dropout = pooled_dim, pooled_dropout
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.proj = nn.Sequential(
            nn.Dropout(input_dropout), nn.Linear(width + self.velocity_dim, proj_dim), nn.LayerNorm(proj_dim), nn.GELU(), nn.Dropout(dropout)
        )
        self.rnn = CELLS[cell](proj_dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        if summary_frames and summary_head:
            self.head = nn.Sequential(Summarise(hidden_size, proj_dim), nn.Dropout(dropout), nn.Linear(2 * (hidden_size + proj_dim), num_classes))
        elif summary_frames or velocity:  # the same layout of weights (head.2), reading the cell's state alone
            self.head = nn.Sequential(Cell(hidden_size), nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, num_classes))
        # the frame probe: fitted (fit_probe), not trained
        self.register_buffer("probe_weight", torch.zeros(num_classes, width))
        self.register_buffer("probe_bias", torch.zeros(num_classes))
        self.register_buffer("probe_l2", torch.zeros(()))  # the L2 weight its fit chose (for the report)
        self.share = 0.0  # the probe's share of the fused probabilities; 0: the GRU alone

    @property
    def state_shape(self) -> tuple[int, int]:
        """The recurrent state's (layers, width) per sequence: the cell's, then the summary's and the velocity's running means."""
        return self.rnn.num_layers, self.rnn.hidden_size + self.summary_dim + self.carry_dim

    @torch.no_grad()
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor, train: list[torch.Tensor] = ()) -> None:
        """The features' ``mean`` and ``std``; with body blocks, theirs are measured on the ``train`` videos."""
        if self.body:
            extra = self.width - self.input_dim
            blocks = body_features(torch.cat(list(train)).to(self.mean.device), self.body, self.aspect) if len(train) else None
            body_mean = blocks.mean(0) if blocks is not None else self.mean.new_zeros(extra)
            body_std = blocks.std(0) if blocks is not None else self.std.new_ones(extra)
            mean, std = torch.cat([mean.to(self.mean), body_mean]), torch.cat([std.to(self.std), body_std])
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-4))

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) -> with the body blocks appended (B, T, ``width``)."""
        return torch.cat([x, body_features(x, self.body, self.aspect).to(x.dtype)], -1) if self.body else x

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        for name in ("probe_weight", "probe_bias", "probe_l2"):  # checkpoints made before the probe: none
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) -> standardised, the pooled block (and without ``framing`` the box) zeroed where
        this model does not use it."""
        x = (self.expand(x) - self.mean) / self.std
        if self.pooled_dropout >= 1 and self.pooled_dim:
            x = torch.cat([torch.zeros_like(x[..., : self.pooled_dim]), x[..., self.pooled_dim :]], dim=-1)
        if not self.framing:  # the box's place and size in the frame: where the camera put the person
            box = self.input_dim - POSE_DIM + 2
            x = torch.cat([x[..., :box], torch.zeros_like(x[..., box : box + 4]), x[..., box + 4 :]], dim=-1)
        return x

    @torch.no_grad()
    def fit_probe(
        self, train: list[torch.Tensor], train_labels: list[int], val: list[torch.Tensor], val_labels: list[int], warmup: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit the probe on these videos' features (after ``set_normalization``), its L2 weight chosen on the
        validation videos. Returns the same fit on the training and validation videos together, for the
        checkpoint (as the time-blind baseline is refitted): validation goes on judging the probe it did not
        see."""
        rows = [self.probe_input(v[None].to(self.mean.device).float())[0] for v in (*train, *val)]
        w, b, l2 = fit_probe(rows[: len(train)], train_labels, rows[len(train) :], val_labels, len(self.probe_bias), warmup)
        self.probe_l2.fill_(l2)
        self.probe_weight.copy_(w)
        self.probe_bias.copy_(b)
        if not val:
            return w, b
        w, b, _ = fit_probe(rows, [*train_labels, *val_labels], [], [], len(self.probe_bias), warmup, l2)
        return w, b

    def probe_input(self, x: torch.Tensor, rep: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, T, D) -> what the probe reads at each frame (B, T, D): the normalised frame, or with a
        summary the running mean of the normalised frames (from ``rep``, the ``outputs`` of the same frames
        carrying the earlier ones; without it, from these frames alone): the time-blind baseline, streaming."""
        if not self.summary_frames:
            return self.normalise(x)
        if rep is not None:  # the summary's last means, before the velocity's
            end = self.rnn.hidden_size + self.summary_dim
            return rep[..., end - self.width : end]
        return running_mean(self.normalise(x), None, 1.0 - 1.0 / self.summary_frames)[0]

    def probe_probs(self, x: torch.Tensor, rep: torch.Tensor | None = None) -> torch.Tensor:
        """Features (B, T, D) -> the probe's per-frame probabilities (B, T, C) (``rep``: as ``probe_input``)."""
        return F.linear(self.probe_input(x, rep), self.probe_weight, self.probe_bias).softmax(-1)

    def scores(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) and their ``outputs`` -> per-frame scores (B, T, C): the head's logits, or with
        a share for the probe the log of ``(1 - share) * GRU + share * probe``."""
        logits = self.head(out)
        if self.share <= 0:
            return logits
        return ((1 - self.share) * logits.softmax(-1) + self.share * self.probe_probs(x, out)).clamp(min=1e-12).log()

    def embed(self, x: torch.Tensor, hidden: Hidden | None = None) -> torch.Tensor:
        """Features (B, T, D) -> the recurrent cell's input (B, T, proj_dim): normalise, with velocity append the
        change from the frames before (``hidden``: the state after them, as ``forward``'s), and project."""
        start = self._split(hidden)[2] if self.velocity_dim else None  # no copy of the state where nothing reads it
        return self.proj[-1](self._embed(self._moving(self.normalise(x), x, start)[0]))

    def _moving(self, z: torch.Tensor, x: torch.Tensor, start: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``normalise``d features and the raw ones -> what the projection reads (with velocity, the change of
        the pose part appended) and the velocity's carry after each frame (None without)."""
        if not self.velocity_dim:
            return z, None
        change, carry = velocity(z[..., self.pose_start :], x[..., self.pose_start] > 0.5, start)  # the pose block's "present"
        return torch.cat([z, change], -1), carry

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """What the projection reads (``_moving``) -> as ``embed``, before the last dropout: what the summary
        averages (the same in training and evaluation)."""
        if self.training and 0 < self.pooled_dropout < 1 and self.pooled_dim:
            # drop the appearance block of whole sequences so the model cannot lean on it alone
            keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.pooled_dropout).to(x.dtype)
            x = torch.cat([x[..., : self.pooled_dim] * keep, x[..., self.pooled_dim :]], dim=-1)
        return self.proj[:-1](x)

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
        """As ``forward``, but the per-frame representation that the head reads (B, T, state width): the cell's
        output, then with a summary its running means, then with velocity its carried means. It is the last
        layer's state after each frame, the space that the prototype rule measures (``pipeline.model.novelty``)."""
        z = self.normalise(x)  # once: with body blocks it is the larger part of a step's work outside the cell
        hidden, start, moved = self._split(hidden)
        zv, moved = self._moving(z, x, moved)
        e = self._embed(zv)
        if lengths is not None:
            packed = pack_padded_sequence(self.proj[-1](e), lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, hidden = self.rnn(packed, hidden)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, hidden = self.rnn(self.proj[-1](e), hidden)
        riding = [moved] if moved is not None else []  # what rides in the state after the cell's own
        if self.summary_frames:
            mean, fill = running_mean(torch.cat([e, e * e, out, z], -1), start, 1.0 - 1.0 / self.summary_frames)
            riding.insert(0, torch.cat([fill, mean], -1))
        if not riding:
            return out, hidden
        rep = torch.cat([out, *riding], -1)
        last = rep[:, -1] if lengths is None else rep[torch.arange(len(x), device=x.device), lengths.to(x.device) - 1]
        return rep, self._join(hidden, last[:, out.shape[-1] :])

    def _split(self, hidden: Hidden | None) -> tuple[Hidden | None, torch.Tensor | None, torch.Tensor | None]:
        """A state of ``state_shape`` -> the cell's own, the summary's (B, summary_dim) and the velocity's
        (B, carry_dim) from the last layer (None where the model has none)."""
        if hidden is None or not self.summary_dim + self.carry_dim:
            return hidden, None, None
        n, s = self.rnn.hidden_size, self.summary_dim
        last = (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]
        summary = last[:, n : n + s] if s else None
        moved = last[:, n + s :] if self.carry_dim else None
        if isinstance(hidden, tuple):
            return (hidden[0][..., :n].contiguous(), hidden[1][..., :n].contiguous()), summary, moved
        return hidden[..., :n].contiguous(), summary, moved

    def _join(self, hidden: Hidden, summary: torch.Tensor) -> Hidden:
        """The inverse of ``_split``: the summary's and velocity's means (``summary``) after the last layer's
        cell state, zeros elsewhere."""
        pad = summary.new_zeros(self.rnn.num_layers, *summary.shape)
        pad[-1] = summary
        if isinstance(hidden, tuple):  # LSTM: h carries it, c has the same width
            return torch.cat([hidden[0], pad], -1), torch.cat([hidden[1], torch.zeros_like(pad)], -1)
        return torch.cat([hidden, pad], -1)

    def step(self, x_t: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """One frame (B, D) -> logits (B, C) and the next hidden state: the streaming form of ``forward``."""
        logits, hidden = self.forward(x_t[:, None], hidden=hidden)
        return logits[:, 0], hidden
