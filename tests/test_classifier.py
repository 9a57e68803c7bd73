"""The classifier keeps the stream its validation split prefers, and the checkpoint says which."""

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline.data.datamodule import CropDataset, WindowDataset, collate
from pipeline.data.features import POSE_DIM
from pipeline.model.checkpoint import read_checkpoint
from pipeline.model.classifier import PROBE_SHARES, ActionClassifier, masked_mean
from pipeline.model.evaluate import stream_accuracy
from pipeline.model.frame_probe import fit_probe

POOLED = 8


def sequences(n: int, pooled_tells: bool, pose_tells: bool, seed: int) -> tuple[list[torch.Tensor], list[int]]:
    """``n`` noisy 16-frame sequences of two classes; the label is written into the pooled block, the pose
    block, both or neither."""
    g = torch.Generator().manual_seed(seed)
    seqs, labels = [], []
    for i in range(n):
        y = i % 2
        x = torch.randn(16, POOLED + POSE_DIM, generator=g)
        sign = 2.0 * y - 1.0
        if pooled_tells:
            x[:, :POOLED] += 2 * sign
        if pose_tells:
            x[:, POOLED:] += 0.15 * sign
        x[:, POOLED] = 1.0  # the pose block's "present" flag: the person is in every frame
        seqs.append(x)
        labels.append(y)
    return seqs, labels


class Data(L.LightningDataModule):
    """The datamodule's side that the classifier reads: tracks, labels and videos (four people) per split."""

    def __init__(self, train, val):
        super().__init__()
        people = lambda n: [SimpleNamespace(group=f"person{i % 4}", path=f"v{i}.avi") for i in range(n)]  # noqa: E731
        self.data = {"train": (*train, people(len(train[0]))), "val": (*val, people(len(val[0])))}
        self.mean = None
        crops = CropDataset(*train, clip_len=16, flip=0.0, noise=0.0, std=torch.ones(POOLED + POSE_DIM))
        self.train = DataLoader(crops, batch_size=8, shuffle=True, collate_fn=collate)
        self.evals = [DataLoader(WindowDataset(*val), batch_size=8, collate_fn=collate), DataLoader(WindowDataset(*val, 8, 8), batch_size=8, collate_fn=collate)]

    def train_dataloader(self):
        return self.train

    def val_dataloader(self):
        return self.evals


def fit(tmp_path, train, val) -> tuple[ActionClassifier, str, L.Trainer, list[DataLoader]]:
    torch.manual_seed(0)
    model = ActionClassifier(
        POOLED + POSE_DIM, ["a", "b"], {"layers": [22]}, hidden_size=16, proj_dim=16, dropout=0.0, lr=1e-2, reject_quantile=0.05
    )  # fmt: skip
    data = Data(train, val)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(tmp_path, monitor="val/video_loss", filename="best")
    trainer = L.Trainer(max_epochs=8, callbacks=[ckpt], logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return model, ckpt.best_model_path, trainer, data.evals


@pytest.mark.parametrize(
    "val_pooled_tells, kept",
    [(True, "fused"), (False, "pose")],  # appearance that holds on unseen data is kept; a shortcut is not
)
def test_the_stream_with_the_lower_validation_loss_is_kept_and_saved(tmp_path, val_pooled_tells, kept):
    train = sequences(48, pooled_tells=True, pose_tells=True, seed=0)
    val = sequences(16, pooled_tells=val_pooled_tells, pose_tells=True, seed=1)
    if not val_pooled_tells:  # the training set's appearance points the wrong way on validation
        val[0][:] = [torch.cat([x[:, :POOLED] - 2 * (2.0 * y - 1.0), x[:, POOLED:]], 1) for x, y in zip(val[0], val[1])]
    model, best, trainer, evals = fit(tmp_path, train, val)
    assert model.stream == kept
    ckpt = read_checkpoint(best)
    state = ckpt["state_dict"]["_extra_state"]
    assert state["stream"] == kept
    # the rejection threshold travels with it: the 5% quantile of the validation frames' smoothed top probability
    rejection = state["rejection"]
    assert rejection["frames"] == 16 * 16 and rejection["quantile"] == 0.05 and 0.5 <= rejection["threshold"] < 1
    again = ActionClassifier(**{k: v for k, v in ckpt["hyper_parameters"].items()})
    again.load_state_dict(ckpt["state_dict"])
    again.eval()
    assert again.stream == kept and again.model is again.streams[kept] and again.rejection == rejection
    tops = np.concatenate(again.smoothed_top(torch.stack([again(x[None])[0].softmax(-1) for x in val[0]]), torch.full((16,), 16)))
    assert abs(np.mean(tops < rejection["threshold"]) - 0.05) <= 1 / 16  # with the weights saved, the same quantile
    # so do the novelty rules: the motion bank of the training tracks (fitted once; calibrated on the 48
    # training and 16 validation clips), and the class means of the kept stream's GRU outputs, refitted at
    # each validation: 10% of the validation frames (after the 8 frames the loss leaves out) are farther
    # than the threshold, with the weights the checkpoint saved
    rules = state["novelty"]
    assert rules["motion"]["window"] == 32 and rules["motion"]["quantile"] == 0.05 and len(rules["motion"]["bank"]) == 48 * 9
    assert rules["motion"]["calibration"] == 48 + 16
    assert rules["prototypes"]["quantile"] == 0.1 and rules["prototypes"]["calibration"] == 16 * 8
    assert rules["prototype_weight"] == again.novelty.prototype_weight == 0.1  # the GRU state's share in a frame's novelty
    # each stream's frame probe (fitted before training) and its share (chosen at each validation) travel too
    assert set(state["probe_shares"]) == {"pose", "fused"} and set(state["probe_shares"].values()) <= set(PROBE_SHARES)
    assert {n: m.share for n, m in again.streams.items()} == state["probe_shares"]
    # the probe validation judged was fitted on the training clips; the checkpoint's on training and validation
    # clips together, with the L2 weight validation chose (as the time-blind baseline is refitted)
    for n, m in again.streams.items():
        fitted = model.streams[n]
        rows = [fitted.probe_input(x[None])[0] for x in (*train[0], *val[0])]
        refit, bias, _ = fit_probe(rows, [*train[1], *val[1]], [], [], 2, 8, float(fitted.probe_l2))
        assert torch.allclose(m.probe_weight, refit) and torch.allclose(m.probe_bias, bias), n
        assert not torch.allclose(m.probe_weight, fitted.probe_weight, atol=1e-3) and float(m.probe_l2) == float(fitted.probe_l2)
    resumed = {key: dict(ckpt["state_dict"]) for key in ("state_dict", "current_model_state")}  # a fit resumed from it
    model.on_load_checkpoint(resumed)  # keeps validation's probes, in the raw weights the averaging restores too
    assert all(torch.equal(resumed[key][f"streams.{n}.probe_weight"], m.probe_weight) for n, m in model.streams.items() for key in resumed)
    with torch.no_grad():
        far = [again.novelty.prototypes.novelty(again.model.outputs(x[None])[0][0], torch.arange(1, 17)) for x in val[0]]
    assert abs(torch.cat([f[8:] for f in far]).gt(1).float().mean().item() - 0.1) <= 1 / 64

    # test scores the kept stream and records every stream's video probabilities for the report
    trainer.test(model, evals, verbose=False)
    tested = {"state_dict": dict(ckpt["state_dict"])}  # a test from the checkpoint reads its probes
    model.on_load_checkpoint(tested)
    assert all(torch.equal(tested["state_dict"][f"streams.{n}.probe_weight"], m.probe_weight) for n, m in again.streams.items())
    assert sorted(model.test_stream_probs) == ["fused", "pose"] and all(len(v) == 16 for v in model.test_stream_probs.values())
    acc = stream_accuracy(model.test_stream_probs, model.test_predictions)
    assert set(acc) == {"pose", "fused", "mean"} and acc[kept] == max(acc["pose"], acc["fused"])
    # a video's score is the mean of its frames after the 8 that the loss leaves out
    frames = {v: p for v, p, _ in model.test_frame_probs}
    assert len(frames) == 16 and all(np.allclose(p, frames[v][8:].mean(0), atol=1e-6) for v, _, p in model.test_predictions)


def test_a_videos_score_leaves_out_the_frames_the_loss_leaves_out():
    # frames 0-7 say "a", the rest "b": after the warm-up the score is b's; a sequence no longer than the
    # warm-up is scored by its last frame, and padding never counts
    p = torch.zeros(2, 12, 2)
    p[:, :8, 0], p[:, 8:, 1] = 1.0, 1.0
    p[1, 4] = torch.tensor([0.25, 0.75])
    lengths = torch.tensor([12, 5])
    assert masked_mean(p, lengths, 8).tolist() == [[0.0, 1.0], [0.25, 0.75]]
    assert masked_mean(p, lengths, 0)[0].tolist() == pytest.approx([8 / 12, 4 / 12])
    assert masked_mean(p, lengths, 0)[1].tolist() == pytest.approx([4.25 / 5, 0.75 / 5])


@pytest.mark.parametrize("fixed, probe_right, chosen", [(None, True, max(PROBE_SHARES)), (None, False, 0.0), (0.5, False, 0.5)])
def test_validation_chooses_the_frame_probes_share(fixed, probe_right, chosen):
    # a fixed share stays as it is, and the epoch is still picked on the GRU alone
    model = ActionClassifier(POOLED + POSE_DIM, ["a", "b"], {"layers": [22]}, streams="fused", probe_share=fixed)
    y = torch.tensor([0, 1, 0, 1])
    right, wrong = torch.eye(2)[y] * 0.8 + 0.1, torch.eye(2)[1 - y] * 0.6 + 0.2
    gru, probe = (wrong, right) if probe_right else (right, wrong)
    model._val_mix = {"fused": [(gru[:2], probe[:2], y[:2]), (gru[2:], probe[2:], y[2:])]}  # two validation batches
    gru_loss = model.choose_probe_shares()
    assert model.streams["fused"].share == chosen
    assert torch.isclose(gru_loss["fused"], -gru[torch.arange(4), y].log().mean())  # what picks the epoch
    mixed = (1 - chosen) * gru + chosen * probe  # the video-level figures are the chosen share's
    assert torch.isclose(model.losses["val_video_fused"].compute(), -mixed[torch.arange(4), y].log().mean())
    assert model.metrics["val_video_fused"].compute()["val/video_top1"] == (mixed.argmax(1) == y).float().mean()


def test_features_without_pooled_layers_train_the_pose_stream_only():
    model = ActionClassifier(POSE_DIM, ["a", "b"], {"layers": []})
    assert list(model.streams) == ["pose"] and model.stream == "pose"
    with pytest.raises(ValueError, match="--model.streams 'both' is not one of auto, pose, fused"):
        ActionClassifier(POSE_DIM, ["a", "b"], {"layers": []}, streams="both")


def test_a_checkpoint_from_before_the_summary_loads_as_it_was_trained(tmp_path):
    old = ActionClassifier(POSE_DIM, ["a", "b"], {}, summary_frames=0)
    hp = {k: v for k, v in old.hparams.items() if k != "summary_frames"}  # saved before the option existed
    again = ActionClassifier.from_hparams(hp)
    again.load_state_dict(old.state_dict())
    assert again.model.state_shape == (1, 64) and ActionClassifier.from_hparams(dict(old.hparams, summary_frames=128)).model.state_shape == (1, 257 + POSE_DIM)
