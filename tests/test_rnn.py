import pytest
import torch
import torch.nn.functional as F

from pipeline.data.features import POSE_DIM
from pipeline.model.rnn import ActionRNN


@pytest.mark.parametrize("velocity", [False, True])
@pytest.mark.parametrize("summary", [0, 5])  # 5 frames: the decaying mean crosses chunk boundaries
@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_streaming_steps_equal_the_full_sequence_forward(cell, summary, velocity):
    torch.manual_seed(0)
    d = POSE_DIM + 4  # a pooled block, then the pose block
    m = ActionRNN(d, num_classes=4, hidden_size=16, num_layers=2, proj_dim=8, cell=cell, summary_frames=summary, velocity=velocity).eval()
    m.set_normalization(torch.randn(d), torch.rand(d) + 0.5)
    x = torch.randn(3, 20, d)
    x[..., 4] = (torch.rand(3, 20) > 0.2).float()  # the pose block's "present": some frames nobody seen
    full, _ = m(x)
    hidden, steps = None, []
    for t in range(20):
        logits, hidden = m.step(x[:, t], hidden)
        steps.append(logits)
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("velocity", [False, True])
@pytest.mark.parametrize("summary", [0, 3])
def test_padding_does_not_change_the_valid_frames(summary, velocity):
    torch.manual_seed(0)
    m = ActionRNN(input_dim=POSE_DIM, num_classes=3, hidden_size=8, summary_frames=summary, velocity=velocity).eval()
    a, b = torch.randn(7, POSE_DIM).abs(), torch.randn(4, POSE_DIM).abs()
    batch = torch.zeros(2, 7, POSE_DIM)
    batch[0], batch[1, :4] = a, b
    out, h = m(batch, torch.tensor([7, 4]))
    alone, h_b = m(b[None])
    assert (out[1, :4] - alone[0]).abs().max() < 1e-5
    assert (h[:, 1] - h_b[:, 0]).abs().max() < 1e-5  # final state is the one at the sequence's own end


def test_the_summary_is_the_time_blind_mean_and_spread_riding_in_the_state():
    torch.manual_seed(0)
    m = ActionRNN(input_dim=6, num_classes=3, hidden_size=8, proj_dim=4, summary_frames=1000).eval()
    x = torch.randn(1, 30, 6)
    rep, h = m.outputs(x)
    assert m.state_shape == (1, 8 + 1 + 2 * 4 + 8 + 6) and h.shape == (1, 1, m.state_shape[1])
    assert torch.allclose(rep[:, -1], h[-1])  # the head's input after the last frame is the last layer's state
    e = m.proj[:-1](m.normalise(x))  # the embeddings before dropout
    read = m.head[0](rep)  # Summarise: output, mean, spread, mean output
    assert torch.allclose(read[0, -1, 8:12], e[0].mean(0), atol=2e-3)  # a long horizon: nearly the plain mean
    assert torch.allclose(read[0, -1, 12:16], e[0].std(0, unbiased=False), atol=2e-2)
    assert read.shape[-1] == 8 + 4 + 4 + 8 and torch.allclose(rep[0, -1, -6:], m.normalise(x)[0].mean(0), atol=2e-2)  # the probe's input rides last
    # reversing time leaves the summary's mean (almost) as it is, and changes the GRU's state
    rev = m.head[0](m.outputs(x.flip(1))[0])
    assert torch.allclose(rev[0, -1, 8:12], read[0, -1, 8:12], atol=2e-2) and not torch.allclose(rev[0, -1, :8], read[0, -1, :8], atol=1e-3)


def test_a_summary_for_the_probe_alone_leaves_the_head_to_the_cell():
    torch.manual_seed(0)
    both = ActionRNN(input_dim=6, num_classes=3, hidden_size=8, proj_dim=4, summary_frames=16).eval()
    probe_only = ActionRNN(input_dim=6, num_classes=3, hidden_size=8, proj_dim=4, summary_frames=16, summary_head=False).eval()
    plain = ActionRNN(input_dim=6, num_classes=3, hidden_size=8, proj_dim=4).eval()
    probe_only.load_state_dict({k.replace("head.1.", "head.2."): v for k, v in plain.state_dict().items()})  # same weights
    x = torch.randn(2, 20, 6)
    assert torch.allclose(probe_only(x)[0], plain(x)[0], atol=1e-6)  # the GRU's scores: the cell's state alone, as without a summary
    assert probe_only.state_shape == both.state_shape  # the running means still ride in the state ...
    probe_only.probe_weight.normal_()
    probe_only.share = 0.5
    out = probe_only.outputs(x)[0]
    assert torch.allclose(probe_only.probe_probs(x, out), probe_only.probe_probs(x), atol=1e-5)  # ... for the probe's running mean
    hidden, steps = None, []
    for t in range(20):
        logits, hidden = probe_only.step(x[:, t], hidden)
        steps.append(logits)
    assert (torch.stack(steps, 1) - probe_only(x)[0]).abs().max() < 1e-5


def test_normalisation_lives_in_the_state_dict():
    m = ActionRNN(input_dim=5, num_classes=2)
    m.set_normalization(torch.full((5,), 3.0), torch.full((5,), 2.0))
    m2 = ActionRNN(input_dim=5, num_classes=2)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.mean, m.mean) and torch.equal(m2.std, m.std)


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="cell"):
        ActionRNN(4, 2, cell="transformer")


@pytest.mark.parametrize("summary_frames", [0, 16])
def test_a_fused_frame_probe_mixes_the_probabilities_and_streams(summary_frames):
    torch.manual_seed(0)
    m = ActionRNN(input_dim=10, num_classes=3, hidden_size=8, pooled_dim=4, pooled_dropout=1.0, summary_frames=summary_frames).eval()
    m.set_normalization(torch.randn(10), torch.rand(10) + 0.5)
    m.probe_weight.normal_()
    x = torch.randn(2, 9, 10)
    out = m.outputs(x)[0]
    assert torch.equal(m(x)[0], m.head(out))  # share 0: the GRU's own logits
    m.share = 0.25
    gru, probe = m.head(out).softmax(-1), m.probe_probs(x)
    assert torch.allclose(m(x)[0].softmax(-1), 0.75 * gru + 0.25 * probe, atol=1e-6)
    # the pose stream's probe sees the pose block only, as its GRU does
    assert torch.allclose(m.probe_probs(torch.cat([torch.randn(2, 9, 4), x[..., 4:]], -1)), probe)
    hidden, steps = None, []
    for t in range(9):
        logits, hidden = m.step(x[:, t], hidden)
        steps.append(logits)
    assert (torch.stack(steps, 1) - m(x)[0]).abs().max() < 1e-5
    # with the summary the probe is the time-blind model: a linear model of the decayed mean of the frames so far
    norm = m.normalise(x)
    seen = norm if not summary_frames else torch.cumsum(norm * (1 - 1 / summary_frames) ** -torch.arange(9.0)[:, None], 1)
    if summary_frames:
        seen = seen / torch.cumsum((1 - 1 / summary_frames) ** -torch.arange(9.0), 0)[:, None]
    assert torch.allclose(probe, F.linear(seen, m.probe_weight, m.probe_bias).softmax(-1), atol=1e-5)
    assert torch.allclose(m.probe_probs(x, out), probe, atol=1e-5)  # read from the state as from the frames


def test_checkpoints_made_before_the_frame_probe_load_without_it():
    old = {k: v for k, v in ActionRNN(5, 2).state_dict().items() if not k.startswith("probe_")}
    m = ActionRNN(5, 2)
    m.probe_weight.fill_(1.0)
    m.load_state_dict(old)  # strict: the probe's buffers are filled in as "none"
    assert m.probe_weight.abs().sum() == 0 and m.share == 0.0
