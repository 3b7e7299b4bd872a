"""torch.compile of models with QuantLinear: the lowbit::matmul op is traced into the graph (fake
implementation, no graph break), compiled outputs and gradients equal eager ones bit for bit (the compiled
graph calls the same kernel; the other ops here, ReLU and adds, are exact), dynamic batch sizes compile once,
and torch.library.opcheck accepts the op's registrations.

Inductor needs a C++ compiler on a CPU (gcc here); the first inductor compile in a fresh machine takes
~15-20 s (later runs hit inductor's on-disk cache), so only one test uses it and the others use aot_eager.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lowbit.nn import QuantLinear, quantize  # noqa: E402
from lowbit.torch_ops import weight_args  # noqa: E402


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down, self.head = nn.Linear(64, 96), nn.Linear(96, 64), nn.Linear(64, 24, bias=False)

    def forward(self, x):
        return self.head(x + self.down(torch.relu(self.up(x))))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return quantize(Residual().eval(), "uint4", group_size=32, overrides={"head": ("int3", 16)}, skip=[],
                    progress=False)


def x_of(batch: int, seed: int = 0, requires_grad: bool = False):
    x = torch.randn(batch, 5, 64, generator=torch.Generator().manual_seed(seed))
    return x.requires_grad_(requires_grad)


def test_op_is_traced_without_graph_breaks(model):
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    x = x_of(2)
    assert torch.equal(torch.compile(model, backend=record, fullgraph=True)(x), model(x))
    assert len(graphs) == 1
    calls = [n for n in graphs[0].graph.nodes if n.op == "call_function" and "lowbit.matmul" in str(n.target)]
    assert len(calls) == 3


def test_inductor_matches_eager(model):
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="inductor", fullgraph=True)
    with torch.no_grad():
        for batch in (2, 3):
            x = x_of(batch, seed=batch)
            assert torch.equal(compiled(x), model(x))


def test_dynamic_batch_compiles_once(model):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=counter, dynamic=True, fullgraph=True)
    with torch.no_grad():
        for batch in (2, 3, 4):
            x = x_of(batch, seed=10 + batch)
            assert torch.equal(compiled(x), model(x))
    assert counter.frame_count == 1


def test_compiled_backward_matches_eager(model):
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    grads = []
    for fn in (model, compiled):
        x = x_of(2, seed=5, requires_grad=True)
        model.zero_grad(set_to_none=True)
        fn(x).square().sum().backward()
        grads.append((x.grad, model.up.bias.grad, model.down.bias.grad))
    for eager, traced in zip(*grads):
        assert eager is not None and torch.equal(eager, traced)


def test_opcheck(model):
    layer: QuantLinear = model.up
    packed, scales, zeros, *meta = weight_args(layer.qweight)
    bias = layer.bias.detach().clone().requires_grad_(True)
    args = (x_of(2, requires_grad=True), packed, scales, zeros, bias, *meta, None)
    torch.library.opcheck(torch.ops.lowbit.matmul.default, args)
    torch.library.opcheck(torch.ops.lowbit.dequantize.default, (packed, scales, zeros, *meta))
