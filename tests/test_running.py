import torch

from pipeline.model.running import running_mean


def test_running_mean_is_the_decayed_mean_and_resumes_from_its_state():
    torch.manual_seed(0)
    v, decay = torch.randn(2, 45, 3), 0.9
    mean, fill = running_mean(v, None, decay)
    s, w = torch.zeros(2, 3), torch.zeros(2, 1)
    for t in range(45):  # the definition, one frame at a time
        s, w = decay * s + v[:, t], decay * w + 1
        assert torch.allclose(mean[:, t], s / w, atol=1e-5) and torch.allclose(fill[:, t], w * (1 - decay), atol=1e-6)
    head, _ = running_mean(v[:, :17], None, decay)
    tail, _ = running_mean(v[:, 17:], torch.cat([fill[:, 16], mean[:, 16]], 1), decay)
    assert torch.allclose(torch.cat([head, tail], 1), mean, atol=1e-5)
