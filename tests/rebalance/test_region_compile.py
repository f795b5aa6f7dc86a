"""RR's training path is static: torch.compile traces forward + backward in one graph (no graph break), gives
the eager numbers, and does not recompile when a batch holds another set of classes."""

from __future__ import annotations

import pytest
import torch

from rrseg.rebalance import RegionRebalance

C = 7
COUNTS = [400, 90, 30, 12, 5, 2, 1]


def step(rr: RegionRebalance, features: torch.Tensor, labels: torch.Tensor):
    features = features.detach().requires_grad_(True)
    loss = rr(features, labels)
    loss.backward()
    return loss.detach(), features.grad


def labels_with(classes: list[int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes)[torch.randint(0, len(classes), (2, 24, 20), generator=gen)]
    labels[torch.rand(2, 24, 20, generator=gen) < 0.2] = 255
    return labels


@pytest.mark.parametrize("slots", [None, 3], ids=["table", "slots"])  # 3 slots: fewer rows than regions (C or B x C)
@pytest.mark.parametrize("per_image", [False, True], ids=["batch", "per_image"])
def test_compiles_in_one_graph_and_does_not_recompile(per_image, slots):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = RegionRebalance(16, C, COUNTS, dropout=0.0, per_image=per_image, slots=slots).train()
    compiled_rr = RegionRebalance(16, C, COUNTS, dropout=0.0, per_image=per_image, slots=slots).train()
    compiled_rr.load_state_dict(eager.state_dict())
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(compiled_rr, fullgraph=True, backend=counter)
    features = torch.randn(2, 16, 6, 5)

    for seed, classes in enumerate([[0, 1, 2], [3, 5, 6, 1], [4]]):  # another set of classes each time
        labels = labels_with(classes, seed)
        loss_e, grad_e = step(eager, features, labels)
        loss_c, grad_c = step(compiled, features, labels)
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad_c, grad_e, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(compiled_rr.reduce[1].running_mean, eager.reduce[1].running_mean)
    assert counter.frame_count == 1, f"compiled {counter.frame_count} times (a recompile or a graph break)"
