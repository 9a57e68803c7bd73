"""GRU -> labels: the LightningModule (loss, metrics, optimiser and schedule).

Training: cross-entropy on every frame of a random crop after a short warm-up (the first frames of a
crop have too little context to be judged), so the model gives a label at every frame when it streams.
Evaluation: per-frame probabilities averaged over a whole video (video level) or over a fixed window
(clip level). The checkpoint holds what inference needs: class names, the extractor record (settings,
weights identity, feature size), as buffers the normalisation statistics, and which stream was kept.

Streams: what works differs with the footage. In a lab (one background, few actors) what a person looks
like identifies the actor, not the action, and keypoints alone generalise; on real footage appearance
helps. With ``streams="auto"`` two models train side by side on the same batches, one on keypoints alone
(``pose``), one on pooled appearance and keypoints (``fused``), and the one with the lower video-level
validation loss is kept: the user's own validation split picks the preset.

Frame probe: each stream also holds a linear model of the single frame, or with the summary of the running
mean of the frames, the time-blind baseline (``pipeline.model.frame_probe``, fitted once before training),
mixed into its per-frame probabilities at a fixed share (``probe_share``) or at the one that gives the
lowest video-level validation loss, chosen anew at each validation; either way the epoch kept is the one
where the GRU alone has the lowest validation loss, so the GRU still has to learn.

Rejection: a model trained on N actions names one of them for anything. The checkpoint carries the rules
that read a frame as ``unknown`` (``pipeline.model.novelty``): motion unlike any of the training videos
(``motion_quantile``; fitted once, before training), weighed with a GRU output far from every class's
training frames (``prototype_quantile``, ``prototype_weight``; refitted at each validation for the kept
stream, as the checkpoint is saved then). Off by default: a low top probability, the ``reject_quantile``
quantile of the kept stream's per-frame top probabilities on the validation videos (smoothed without delay,
as ``infer.py`` settles a finished video). ``benchmarks/open_set.py`` measured them: motion catches most
unseen actions, the GRU state at a small weight spares known actions done in an unusual way, the top
probability catches almost none (an unseen action is named as its nearest known one, with confidence).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from pipeline.data.features import POSE_DIM
from pipeline.model.novelty import MotionRule, Novelty, PrototypeRule
from pipeline.model.rnn import ActionRNN
from pipeline.options import OptionError, check_choice, check_range
from pipeline.timeline import SMOOTH_S, zero_phase

LEVELS = ("video", "clip")  # dataloader 0 and 1 of validation and test
MAX_TRACKS = 512  # training tracks whose GRU outputs give the class means of the prototype rule (evenly drawn)
STREAMS = ("pose", "fused")
PROBE_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the probe's shares that validation chooses from (1: the time-blind model alone)


def scored_frames(lengths: torch.Tensor, frames: int, warmup: int = 0) -> torch.Tensor:
    """(B, ``frames``) mask of the frames that count: each sequence's first ``lengths``, less its first
    ``warmup`` (the last frame always counts). One rule for the loss and the video's score: the GRU is
    never trained on a sequence's first frames, so its word there is not asked for either."""
    t = torch.arange(frames, device=lengths.device)[None]
    lengths = lengths[:, None]
    return (t < lengths) & (t >= torch.clamp(lengths - 1, max=warmup))


def masked_mean(values: torch.Tensor, lengths: torch.Tensor, warmup: int = 0) -> torch.Tensor:
    """Mean over time of (B, T, C) values over each sequence's ``scored_frames``."""
    mask = scored_frames(lengths.to(values.device), values.shape[1], warmup).to(values.dtype)
    return (values * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


class ActionClassifier(L.LightningModule):
    """Args:
    input_dim, class_names, extractor: from the data (linked by the CLI); the extractor record
        configures inference.
    hidden_size, num_layers, proj_dim, dropout, input_dropout, cell: the temporal model.
    summary_frames: horizon of the time-blind summary the head reads beside the cell's state (the running
        mean and spread of the frame embeddings, the mean of the cell's outputs; ``pipeline.model.rnn``);
        0: the cell's state alone (checkpoints made before the summary).
    summary_head: False: the head reads the cell's state alone and the summary serves the probe only (the
        running mean it reads), so the GRU trains as without a summary.
    streams: ``pose``, ``fused`` or ``auto`` (both trained, the lower validation loss kept); without pooled
        layers in the features there is only ``pose``.
    body: body-relative blocks made from each frame's keypoints (``pipeline.model.body``: ``centred``,
        ``bones``, ``angles``, ``confident``), appended to the features; ``aspect``: the frame shape
        (width / height) their geometry assumes. [] (the default): the features as extracted.
    framing: False hides the box's place and size in the frame from the model (``pipeline.model.rnn``).
    velocity: the cell also reads how fast the pose features change (``pipeline.model.velocity``), the motion
        stream beside the joints.
    pooled_dropout: chance of hiding the pooled backbone block from a training sequence of the fused stream.
    probe_share: share of each stream's per-frame probabilities given to its probe (a linear model of the
        frame alone, or with the summary of the frames' running mean, fitted before training,
        ``pipeline.model.frame_probe``); 0: the GRU alone; 1: the probe alone; None
        (the default): chosen per stream at each validation from ``PROBE_SHARES``, the lowest video-level
        validation loss (ties: the smaller share).
    lr, weight_decay: AdamW with a one-cycle schedule over the whole run.
    warmup_frames: frames at the start of each training crop left out of the loss, and of each sequence
        left out of its video-level score in validation and test (``scored_frames``).
    label_smoothing: cross-entropy label smoothing.
    motion_quantile: share of the known clips (training clips seen as from a new actor, validation clips)
        whose motion the motion rule reads as ``unknown``; 0: no motion rule.
    motion_window: frames of a person's motion that the motion rule describes.
    prototype_quantile: share of the validation frames that the GRU-state rule reads as ``unknown``; 0: off.
    prototype_weight: the GRU-state rule's share in a frame's novelty when both rules are on (weighted
        geometric mean; chosen on ``benchmarks/open_set.py``: 0.1 keeps unseen actions caught and spares
        an unusual actor's known ones; ``configs/teach.yaml``, five clips a class, uses 0.5).
    reject_quantile: share of the validation split's frames (known actions) that the top-probability
        threshold reads as ``unknown``; 0: no such threshold.
    background: the class (when the data has it) of "nothing in particular": trained like the others,
        reported as no action (no segment, no label drawn).
    """

    def __init__(
        self,
        input_dim: int,
        class_names: list[str],
        extractor: dict,
        hidden_size: int = 64,
        num_layers: int = 1,
        proj_dim: int = 64,
        dropout: float = 0.5,
        input_dropout: float = 0.0,
        cell: str = "gru",
        summary_frames: int = 128,
        summary_head: bool = True,
        pooled_dropout: float = 0.5,
        body: list[str] | None = None,
        aspect: float = 16 / 9,
        framing: bool = True,
        velocity: bool = False,
        probe_share: float | None = None,
        streams: str = "auto",
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        warmup_frames: int = 8,
        label_smoothing: float = 0.0,
        motion_quantile: float = 0.05,
        motion_window: int = 32,
        prototype_quantile: float = 0.1,
        prototype_weight: float = 0.1,
        reject_quantile: float = 0.0,
        background: str = "background",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        check_choice("--model.streams", streams, ("auto", *STREAMS))
        check_range("--model.lr", lr, 0, 10, above=True)
        check_range("--model.weight_decay", weight_decay, 0, 10)
        check_range("--model.warmup_frames", warmup_frames, 0, 10_000)
        check_range("--model.label_smoothing", label_smoothing, 0, 0.99)
        check_range("--model.reject_quantile", reject_quantile, 0, 0.5)
        check_range("--model.motion_quantile", motion_quantile, 0, 0.5)
        check_range("--model.motion_window", motion_window, 2, 10_000)
        check_range("--model.prototype_quantile", prototype_quantile, 0, 0.5)
        check_range("--model.prototype_weight", prototype_weight, 0, 1)
        if probe_share is not None:
            check_range("--model.probe_share", probe_share, 0, 1)
        if len(class_names) < 2:
            raise OptionError(f"a classifier needs at least 2 classes, got {len(class_names)} ({', '.join(class_names)}): add class folders")
        pooled_dim = input_dim - POSE_DIM
        names = ["pose"] if not pooled_dim else list(STREAMS) if streams == "auto" else [streams]
        self.streams = nn.ModuleDict(
            {
                name: ActionRNN(
                    input_dim, len(class_names), hidden_size, num_layers, proj_dim, dropout, input_dropout, cell,
                    pooled_dim, 1.0 if name == "pose" else pooled_dropout, summary_frames, tuple(body or ()), aspect, framing,
                    summary_head, velocity,
                )  # fmt: skip
                for name in names
            }
        )
        self.stream = names[-1]  # the one used outside validation; chosen anew at each validation
        n = len(class_names)
        metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(n, average="micro"),
                "top5": MulticlassAccuracy(n, top_k=min(5, n), average="micro"),
                "mean_class": MulticlassAccuracy(n, average="macro"),
            }
        )
        keys = [f"{s}_{lv}_{name}" for s in ("val", "test") for lv in LEVELS for name in names]
        self.metrics = nn.ModuleDict({k: metrics.clone(prefix=f"{k.split('_')[0]}/{k.split('_')[1]}_") for k in keys})
        self.losses = nn.ModuleDict({k: MeanMetric() for k in keys})
        self.confusion = torch.nn.ModuleDict({lv: MulticlassConfusionMatrix(n) for lv in LEVELS})
        self.test_predictions: list[tuple[int, int, list[float]]] = []  # (video, label, video-level probs)
        self.test_stream_probs: dict[str, list[tuple[int, list[float]]]] = {}  # every trained stream's, for the report
        self.rejection: dict = {"threshold": 0.0}  # fitted at each validation (see the module's docstring)
        self.novelty = Novelty(prototype_weight=prototype_weight)  # the distance rules (see the module's docstring)
        self._val_top: dict[str, list[np.ndarray]] = {}  # per stream, the validation frames' smoothed top probability
        self._val_out: dict[str, list[torch.Tensor]] = {}  # per stream, the validation tracks' GRU outputs
        self._train_out: dict[str, list[torch.Tensor]] = {}  # per stream, the training tracks' GRU outputs, this validation's weights
        self._train_labels: list[int] = []
        self._saved_probes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per stream, the probe the checkpoint gets
        self._val_mix: dict[str, list[tuple[torch.Tensor, ...]]] = {}  # per stream, the validation videos' GRU and probe probabilities
        self.test_frame_probs: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # the kept stream's, per test frame: probabilities, novelty

    @classmethod
    def from_hparams(cls, hp: dict) -> ActionClassifier:
        """The classifier a checkpoint's hyper-parameters describe (weights not loaded); one made before an
        option existed gets what it was trained with, not today's default."""
        params = inspect.signature(cls).parameters
        return cls(**{"summary_frames": 0, **{k: v for k, v in hp.items() if k in params}})  # Lightning adds its own keys

    @property
    def model(self) -> ActionRNN:
        """The kept stream: what inference runs."""
        return self.streams[self.stream]

    def get_extra_state(self) -> dict:
        shares = {name: m.share for name, m in self.streams.items()}
        return {"stream": self.stream, "rejection": self.rejection, "novelty": self.novelty.state(), "probe_shares": shares}

    def set_extra_state(self, state: dict) -> None:
        if state["stream"] not in self.streams:
            raise RuntimeError(f"the checkpoint kept stream '{state['stream']}', which these settings do not build")
        self.stream = state["stream"]
        self.rejection = state.get("rejection", {"threshold": 0.0})  # none in checkpoints made before it
        self.novelty = Novelty.from_state(state.get("novelty"))
        for name, share in state.get("probe_shares", {}).items():  # none in checkpoints made before the probe
            if name in self.streams:
                self.streams[name].share = float(share)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the weight-averaging callback saves its averaged copy, made before the stream was chosen: say which
        for key in ("state_dict", "current_model_state"):
            if key in checkpoint:
                checkpoint[key]["_extra_state"] = self.get_extra_state()
        _put_probes(checkpoint, self._saved_probes)  # fitted on training and validation videos
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and "train" in getattr(dm, "data", {}):
            # what an INT8 export calibrates on by default (``pipeline.inference.quantize``): the user's own footage
            checkpoint["train_videos"] = [str(Path(v.path).resolve()) for v in dm.data["train"][2]]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a resumed fit (the probes are fitted again first): validation goes on judging the ones without its videos;
        # a test after the fit reads the checkpoint's
        if self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING:
            _put_probes(checkpoint, {name: (self.streams[name].probe_weight, self.streams[name].probe_bias) for name in self._saved_probes})

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and getattr(dm, "mean", None) is not None:
            for m in self.streams.values():
                m.set_normalization(dm.mean, dm.std, dm.data["train"][0] if "train" in dm.data else ())
        if stage == "fit" and dm is not None and "train" in getattr(dm, "data", {}) and self.hparams.probe_share != 0:
            seqs, labels, _ = dm.data["train"]
            val, val_labels, _ = dm.data.get("val", ([], [], []))
            for name, m in self.streams.items():
                self._saved_probes[name] = m.fit_probe(seqs, labels, val, val_labels, self.hparams.warmup_frames)
                m.share = self.hparams.probe_share or 0.0  # None: chosen at each validation
        if stage == "fit" and dm is not None and "train" in getattr(dm, "data", {}) and self.hparams.motion_quantile > 0:
            seqs, _, videos = dm.data["train"]
            val = dm.data["val"][0] if "val" in dm.data else []
            groups = [v.group or str(v.path) for v in videos]  # no groups: each clip is its own
            self.novelty.motion = MotionRule.fit(seqs, groups, val, self.hparams.motion_window, self.hparams.motion_quantile, self.min_frames)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths)[0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        mask = scored_frames(batch["lengths"].to(self.device), batch["x"].shape[1], self.hparams.warmup_frames)
        targets = batch["y"][:, None].expand_as(mask)
        loss = sum(  # the GRU's own head: the frame probe is fitted, not trained
            F.cross_entropy(m.head(m.outputs(batch["x"], batch["lengths"])[0])[mask], targets[mask], label_smoothing=self.hparams.label_smoothing)
            for m in self.streams.values()
        )
        self.log("train/loss", loss / len(self.streams), prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def _evaluate(self, batch: dict, stage: str, dataloader_idx: int) -> None:
        # validation scores every stream (to choose one); test scores the kept one and, for whole videos,
        # records the others' probabilities for the report
        level = LEVELS[dataloader_idx]
        names = list(self.streams) if stage == "val" or level == "video" else [self.stream]
        videos, lengths = batch["video"].tolist(), batch["lengths"].tolist()
        warmup = self.hparams.warmup_frames
        for name in names:
            out = self.streams[name].outputs(batch["x"], batch["lengths"])[0]
            frame_probs = self.streams[name].scores(batch["x"], out).softmax(-1)
            probs = masked_mean(frame_probs, batch["lengths"], warmup)
            if stage == "val" and level == "video" and self.hparams.probe_share != 0:
                gru = masked_mean(self.streams[name].head(out).softmax(-1), batch["lengths"], warmup)
                probe = masked_mean(self.streams[name].probe_probs(batch["x"]), batch["lengths"], warmup)
                self._val_mix.setdefault(name, []).append((gru, probe, batch["y"]))
            if stage == "val" and level == "video" and self.hparams.reject_quantile > 0:
                self._val_top.setdefault(name, []).extend(self.smoothed_top(frame_probs, batch["lengths"]))
            if stage == "val" and level == "video" and self.hparams.prototype_quantile > 0:  # kept only for the GRU-state rule
                self._val_out.setdefault(name, []).extend(out[i, :n].detach() for i, n in enumerate(lengths))
            if stage == "test" and level == "video" and len(self.streams) > 1:
                self.test_stream_probs.setdefault(name, []).extend(zip(videos, probs.tolist()))
            if stage == "test" and name != self.stream:
                continue
            if stage == "test" and level == "video":
                self.test_frame_probs += [
                    (v, frame_probs[i, :n].float().cpu().numpy(), self.novelty.sequence(batch["x"][i, :n], out[i, :n]).cpu().numpy())
                    for i, (v, n) in enumerate(zip(videos, lengths))
                ]  # fmt: skip
            key = f"{stage}_{level}_{name}"
            self.losses[key].update(F.nll_loss(probs.clamp(min=1e-8).log(), batch["y"], reduction="none"))
            self.metrics[key].update(probs, batch["y"])
            if stage == "test":
                self.confusion[level].update(probs, batch["y"])
                if level == "video":
                    self.test_predictions += list(zip(videos, batch["y"].tolist(), probs.tolist()))

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def _log_metrics(self, stage: str) -> None:
        names = list(self.streams) if stage == "val" else [self.stream]
        gru_loss = self.choose_probe_shares() if stage == "val" and not self.trainer.sanity_checking else {}
        losses = {(lv, n): self.losses[f"{stage}_{lv}_{n}"].compute() for lv in LEVELS for n in names}
        if stage == "val" and not self.trainer.sanity_checking:
            self.stream = min(names, key=lambda n: float(losses["video", n]))
            self.rejection = self.fit_rejection(self._val_top.get(self.stream, []))
            self.novelty.prototypes = self.fit_prototypes(self._train_out.get(self.stream, []), self._val_out.get(self.stream, []))
        self._val_top, self._val_out, self._train_out, self._val_mix = {}, {}, {}, {}
        if self.stream in gru_loss:
            # the epoch kept is chosen on the GRU's own loss: with the probe mixed in, a barely trained GRU
            # that only softens a confident probe scores as well (it chose epoch 0 on pushfit)
            self.log("val/video_loss_mixed", losses["video", self.stream])
            losses["video", self.stream] = gru_loss[self.stream]
        for level in LEVELS:
            self.log(f"{stage}/{level}_loss", losses[level, self.stream])
            self.log_dict(self.metrics[f"{stage}_{level}_{self.stream}"].compute(), prog_bar=level == "video")
            if len(names) > 1:
                self.log_dict({f"{stage}/{level}_loss_{n}": losses[level, n] for n in names})
        if len(names) > 1:
            self.log(f"{stage}/stream", float(STREAMS.index(self.stream)))  # 0 pose, 1 fused
        for n in names:
            for level in LEVELS:
                self.metrics[f"{stage}_{level}_{n}"].reset()
                self.losses[f"{stage}_{level}_{n}"].reset()

    def choose_probe_shares(self) -> dict[str, torch.Tensor]:
        """Each stream's probe share: the fixed ``probe_share``, or (None) the one of ``PROBE_SHARES`` with the
        lowest video-level validation loss (a video's probabilities are the mean of its frames', so the mix of
        the means is the mean of the mixes); its video-level validation figures are then those of that share
        (the clip-level ones are the previous share's). Returns each stream's video-level loss of the GRU
        alone, on which the epoch is chosen either way."""
        shares = PROBE_SHARES if self.hparams.probe_share is None else (float(self.hparams.probe_share),)
        gru_loss = {}
        for name, parts in self._val_mix.items():
            gru, probe, y = (torch.cat(t) for t in zip(*parts))
            nll = {s: F.nll_loss(((1 - s) * gru + s * probe).clamp(min=1e-8).log(), y, reduction="none") for s in (0.0, *shares)}
            share = min(shares, key=lambda s: float(nll[s].mean()))
            self.streams[name].share = share
            key = f"val_video_{name}"
            self.losses[key].reset()
            self.losses[key].update(nll[share])
            self.metrics[key].reset()
            self.metrics[key].update((1 - share) * gru + share * probe, y)
            gru_loss[name] = nll[0.0].mean()
        return gru_loss

    @property
    def min_frames(self) -> int:
        """Frames of a track before the novelty rules judge it: as many as the loss leaves out."""
        return max(self.hparams.warmup_frames, 2)

    def on_validation_epoch_start(self) -> None:
        # the weights validated now (the weight average, when there is one) are those the checkpoint saves:
        # the prototype rule is fitted on their outputs for the training tracks
        dm = getattr(self.trainer, "datamodule", None)
        if self.hparams.prototype_quantile <= 0 or self.trainer.sanity_checking or "train" not in getattr(dm, "data", {}):
            return
        seqs, labels, _ = dm.data["train"]
        keep = torch.linspace(0, len(seqs) - 1, min(MAX_TRACKS, len(seqs))).round().long().tolist()
        x = nn.utils.rnn.pad_sequence([seqs[i] for i in keep], batch_first=True).to(self.device)
        lengths = torch.tensor([len(seqs[i]) for i in keep])
        self._train_labels = [int(labels[i]) for i in keep]
        with torch.no_grad():
            for name, m in self.streams.items():
                out = m.outputs(x.float(), lengths)[0]
                self._train_out[name] = [out[j, :n] for j, n in enumerate(lengths.tolist())]

    def fit_prototypes(self, train: list[torch.Tensor], val: list[torch.Tensor]) -> PrototypeRule | None:
        if self.hparams.prototype_quantile <= 0 or not train:
            return None
        return PrototypeRule.fit(train, self._train_labels, val, len(self.class_names), self.hparams.prototype_quantile, self.min_frames)

    def smoothed_top(self, frame_probs: torch.Tensor, lengths: torch.Tensor) -> list[np.ndarray]:
        """Per video, the top probability of each frame after the delay-free smoothing infer.py settles with."""
        times = np.arange(frame_probs.shape[1]) / (self.hparams.extractor.get("fps") or 25.0)
        p = frame_probs.detach().float().cpu().numpy()
        return [zero_phase(times[:n], p[i, :n], SMOOTH_S).max(1) for i, n in enumerate(lengths.tolist())]

    def fit_rejection(self, tops: list[np.ndarray]) -> dict:
        """The threshold below which ``reject_quantile`` of the validation frames fall (all known actions)."""
        q = self.hparams.reject_quantile
        if not tops or q <= 0:
            return {"threshold": 0.0}
        top = np.concatenate(tops)
        return {
            "score": "top smoothed probability", "threshold": round(float(np.quantile(top, q)), 4), "quantile": q,
            "smooth_s": SMOOTH_S, "frames": int(len(top)), "videos": len(tops),
        }  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.test_predictions, self.test_stream_probs, self.test_frame_probs = [], {}, []
        for c in self.confusion.values():
            c.reset()

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _put_probes(checkpoint: dict, probes: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Each stream's probe weight and bias into the checkpoint's weights, the averaged ones and (for a resumed
    fit, which the weight-averaging callback restores from them) the raw ones."""
    for key in ("state_dict", "current_model_state"):
        for name, (weight, bias) in probes.items():
            if key in checkpoint:
                checkpoint[key][f"streams.{name}.probe_weight"], checkpoint[key][f"streams.{name}.probe_bias"] = weight, bias


class EMA(EMAWeightAveraging):
    """Exponential moving average of the weights; checkpoints hold the average as their ``state_dict``.

    Lightning's callback, when a checkpoint is loaded on a trainer that has just fitted (``fit`` then
    ``test(ckpt_path="best")``), restores the raw weights instead of the average it validated and saved.
    Outside fitting, the saved average is what gets evaluated.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
