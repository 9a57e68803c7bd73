"""GRU -> labels: the LightningModule (loss, metrics, optimiser and schedule).

Training: cross-entropy on every frame of a random crop after a short warm-up (the first frames of a
crop have too little context to be judged), so the model gives a label at every frame when it streams.
Evaluation: per-frame probabilities averaged over a whole video (video level) or over a fixed window
(clip level). The checkpoint holds what inference needs: class names, the extractor record (settings,
weights identity, feature size) and, as buffers, the normalisation statistics.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from pipeline.features import POSE_DIM
from pipeline.model import ActionRNN

LEVELS = ("video", "clip")  # dataloader 0 and 1 of validation and test


def masked_mean(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, C) values, counting each sequence's first ``lengths`` frames only."""
    mask = (torch.arange(values.shape[1], device=values.device)[None] < lengths.to(values.device)[:, None]).to(values.dtype)
    return (values * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


class ActionClassifier(L.LightningModule):
    """Args:
    input_dim, class_names, extractor: from the data (linked by the CLI); the extractor record
        configures inference.
    hidden_size, num_layers, proj_dim, dropout, input_dropout, cell: the temporal model.
    pooled_dropout: chance of hiding the pooled backbone block from a training sequence.
    lr, weight_decay: AdamW with a one-cycle schedule over the whole run.
    warmup_frames: frames at the start of each training crop left out of the loss.
    label_smoothing: cross-entropy label smoothing.
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
        pooled_dropout: float = 0.5,
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        warmup_frames: int = 8,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        pooled_dim = input_dim - POSE_DIM
        self.model = ActionRNN(
            input_dim, len(class_names), hidden_size, num_layers, proj_dim, dropout, input_dropout, cell, pooled_dim, pooled_dropout
        )
        n = len(class_names)
        metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(n, average="micro"),
                "top5": MulticlassAccuracy(n, top_k=min(5, n), average="micro"),
                "mean_class": MulticlassAccuracy(n, average="macro"),
            }
        )
        self.metrics = torch.nn.ModuleDict({f"{s}_{lv}": metrics.clone(prefix=f"{s}/{lv}_") for s in ("val", "test") for lv in LEVELS})
        self.confusion = torch.nn.ModuleDict({lv: MulticlassConfusionMatrix(n) for lv in LEVELS})
        self.test_predictions: list[tuple[int, int, list[float]]] = []  # (video, label, video-level probs)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and getattr(dm, "mean", None) is not None:
            self.model.set_normalization(dm.mean, dm.std)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, lengths)[0]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["x"], batch["lengths"])
        t = torch.arange(logits.shape[1], device=self.device)[None]
        lengths = batch["lengths"].to(self.device)[:, None]
        mask = (t < lengths) & (t >= torch.clamp(lengths - 1, max=self.hparams.warmup_frames))
        targets = batch["y"][:, None].expand_as(mask)
        loss = F.cross_entropy(logits[mask], targets[mask], label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def _evaluate(self, batch: dict, stage: str, dataloader_idx: int) -> torch.Tensor:
        level = LEVELS[dataloader_idx]
        probs = masked_mean(self(batch["x"], batch["lengths"]).softmax(-1), batch["lengths"])
        loss = F.nll_loss(probs.clamp(min=1e-8).log(), batch["y"])
        self.metrics[f"{stage}_{level}"].update(probs, batch["y"])
        self.log(f"{stage}/{level}_loss", loss, batch_size=len(batch["y"]), add_dataloader_idx=False, sync_dist=True)
        if stage == "test":
            self.confusion[level].update(probs, batch["y"])
            if level == "video":
                self.test_predictions += list(zip(batch["video"].tolist(), batch["y"].tolist(), probs.tolist()))
        return probs

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def _log_metrics(self, stage: str) -> None:
        for level in LEVELS:
            m = self.metrics[f"{stage}_{level}"]
            self.log_dict(m.compute(), prog_bar=level == "video", add_dataloader_idx=False, sync_dist=True)
            m.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []
        for c in self.confusion.values():
            c.reset()

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams.lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EMA(EMAWeightAveraging):
    """Exponential moving average of the weights; checkpoints hold the average as their ``state_dict``.

    Lightning's callback, when a checkpoint is loaded on a trainer that has just fitted (``fit`` then
    ``test(ckpt_path="best")``), restores the raw weights instead of the average it validated and saved.
    Outside fitting, the saved average is what gets evaluated.
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
