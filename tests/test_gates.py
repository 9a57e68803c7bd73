"""The explicit GRU cell reproduces torch.nn.GRU, and the timeline plot shows its gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_clip

from pipeline.data.extract import extract_video
from pipeline.inference import files as inference
from pipeline.inference.files import OutputPaths, analyse_video
from pipeline.inference.predictor import ActionPredictor
from pipeline.model.gates import ExplicitGRU, mean_gate_activity


@pytest.mark.parametrize("layers", [1, 2])
def test_explicit_cell_reproduces_nn_gru(layers):
    torch.manual_seed(layers)
    gru = torch.nn.GRU(12, 24, layers, batch_first=True).eval()
    x, h0 = torch.randn(4, 30, 12), torch.randn(layers, 4, 24)
    out, h = gru(x, h0)
    out2, h2, gates = ExplicitGRU(gru)(x, h0)
    assert (out - out2).abs().max() < 1e-5 and (h - h2).abs().max() < 1e-5
    assert gates["update"].shape == gates["reset"].shape == (layers, 4, 30, 24)
    assert 0 < gates["update"].min() and gates["update"].max() < 1


def test_gates_follow_the_equations():
    """With the update gate forced shut (z = 0) the state is the candidate; forced open (z = 1) it is kept."""
    gru = torch.nn.GRU(3, 5, 1, batch_first=True)
    cell = ExplicitGRU(gru)
    x, h = torch.randn(2, 3), torch.randn(2, 5)
    with torch.no_grad():
        gru.bias_ih_l0[5:10] = 50.0  # update gate rows -> z ~ 1
    h1, _, z = cell.cell(0, x, h)
    assert torch.allclose(z, torch.ones_like(z)) and torch.allclose(h1, h, atol=1e-5)
    with torch.no_grad():
        gru.bias_ih_l0[5:10] = -50.0  # z ~ 0: h_t is the candidate, which ignores h when r ~ 0
        gru.bias_ih_l0[0:5] = -50.0
    h1, r, _ = cell.cell(0, x, h)
    expected = torch.tanh(x @ gru.weight_ih_l0[10:].T + gru.bias_ih_l0[10:])
    assert torch.allclose(r, torch.zeros_like(r)) and torch.allclose(h1, expected, atol=1e-5)


def test_timeline_plot_shows_the_cells_gate_values(tiny_checkpoint, tmp_path, monkeypatch):
    captured = {}

    def capture(path, times, probs, names, segments, title="", gates=None, tracks=None, duration_s=None, warmup=None):
        captured.update(times=times, gates=gates, warmup=warmup)
        return Path(path)

    monkeypatch.setattr(inference, "plot_timeline", capture)
    predictor = ActionPredictor(tiny_checkpoint, device="cpu")
    clip = write_clip(tmp_path / "a.avi", frames=37)
    analyse_video(str(clip), predictor, OutputPaths(plot=tmp_path / "p.png"), batch_size=8, progress=False)

    features = torch.from_numpy(extract_video(predictor.extractor, clip).subject())
    with torch.inference_mode():
        _, _, gates = ExplicitGRU(predictor.model.rnn)(predictor.model.embed(features[None]))
    expected = {k: v[0].numpy() for k, v in mean_gate_activity(gates).items()}
    assert len(captured["times"]) == 37
    assert predictor.warmup_frames == 8 and captured["warmup"] == (captured["times"][0], captured["times"][8])  # greyed: not in the label
    for k in ("update", "reset"):
        np.testing.assert_allclose(captured["gates"][k], expected[k], atol=1e-5)


def test_real_plot_has_the_gate_panel(tiny_checkpoint, tmp_path):
    import matplotlib.image

    predictor = ActionPredictor(tiny_checkpoint, device="cpu")
    clip = write_clip(tmp_path / "a.avi", frames=20)
    analyse_video(str(clip), predictor, OutputPaths(plot=tmp_path / "with.png"), progress=False)
    predictor._inspector = None  # as for an LSTM model: no gate panel
    analyse_video(str(clip), predictor, OutputPaths(plot=tmp_path / "without.png"), progress=False)
    h_with = matplotlib.image.imread(tmp_path / "with.png").shape[0]
    h_without = matplotlib.image.imread(tmp_path / "without.png").shape[0]
    assert h_with > h_without
