import pytest
import torch

from pipeline.model.rnn import ActionRNN


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_streaming_steps_equal_the_full_sequence_forward(cell):
    torch.manual_seed(0)
    m = ActionRNN(input_dim=12, num_classes=4, hidden_size=16, num_layers=2, proj_dim=8, cell=cell).eval()
    m.set_normalization(torch.randn(12), torch.rand(12) + 0.5)
    x = torch.randn(3, 20, 12)
    full, _ = m(x)
    hidden, steps = None, []
    for t in range(20):
        logits, hidden = m.step(x[:, t], hidden)
        steps.append(logits)
    assert (torch.stack(steps, 1) - full).abs().max() < 1e-5


def test_padding_does_not_change_the_valid_frames():
    torch.manual_seed(0)
    m = ActionRNN(input_dim=6, num_classes=3, hidden_size=8).eval()
    a, b = torch.randn(7, 6), torch.randn(4, 6)
    batch = torch.zeros(2, 7, 6)
    batch[0], batch[1, :4] = a, b
    out, h = m(batch, torch.tensor([7, 4]))
    alone, h_b = m(b[None])
    assert (out[1, :4] - alone[0]).abs().max() < 1e-5
    assert (h[:, 1] - h_b[:, 0]).abs().max() < 1e-5  # final state is the one at the sequence's own end


def test_normalisation_lives_in_the_state_dict():
    m = ActionRNN(input_dim=5, num_classes=2)
    m.set_normalization(torch.full((5,), 3.0), torch.full((5,), 2.0))
    m2 = ActionRNN(input_dim=5, num_classes=2)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.mean, m.mean) and torch.equal(m2.std, m.std)


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="cell"):
        ActionRNN(4, 2, cell="transformer")


def test_a_fused_frame_probe_mixes_the_probabilities_and_streams():
    torch.manual_seed(0)
    m = ActionRNN(input_dim=10, num_classes=3, hidden_size=8, pooled_dim=4, pooled_dropout=1.0).eval()
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


def test_checkpoints_made_before_the_frame_probe_load_without_it():
    old = {k: v for k, v in ActionRNN(5, 2).state_dict().items() if not k.startswith("probe_")}
    m = ActionRNN(5, 2)
    m.probe_weight.fill_(1.0)
    m.load_state_dict(old)  # strict: the probe's buffers are filled in as "none"
    assert m.probe_weight.abs().sum() == 0 and m.share == 0.0
