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
