"""lowbit.nn.quantize on a tiny transformer-like model: which layers are replaced (skip globs, overrides,
exact nn.Linear only), outputs against fake quantization (the float model with its linears' weights replaced by
the fp64 decoding of the quantized buffers, conftest.reference_weight), state-dict round trips, the rule for
in_features not divisible by the group size, and errors that leave the model unchanged."""
from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lowbit  # noqa: E402
from lowbit import DTypeError, QuantizationError  # noqa: E402
from lowbit.nn import QuantizationWarning, QuantLinear, quantize  # noqa: E402

from .conftest import reference_weight  # noqa: E402

D, F, VOCAB, HEADS = 64, 96, 50, 4


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D, bias=False)
        self.o_proj = nn.Linear(D, D)

    def forward(self, x):
        b, t, _ = x.shape
        split = lambda v: v.reshape(b, t, HEADS, D // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        s = (q @ k.transpose(-1, -2)) / (D // HEADS) ** 0.5
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        return self.o_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(D, F), nn.Linear(F, D)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.LayerNorm(D), Attention(), nn.LayerNorm(D), MLP()

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, D)
        self.layers = nn.ModuleList([Block(), Block()])
        self.norm = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.1)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.layers:
            x = block(x)
        return self.lm_head(self.norm(x))


SETTINGS = dict(weight_dtype="int4", group_size=32, skip=["lm_head", "layers.1.attn.*"],
                overrides={"*.mlp.down": ("uint4", 32), "layers.0.attn.q_proj": "int8"}, progress=False)
TOKENS = torch.tensor([[3, 14, 15, 9, 26], [5, 35, 8, 9, 7]])


def expected_config(name: str):
    """(dtype, group, zero_point) that SETTINGS give the linear ``name``, or None if it stays float."""
    if name == "lm_head" or name.startswith("layers.1.attn."):
        return None
    if name.endswith("mlp.down"):
        return ("uint4", 32, True)     # uint's default: zero points
    if name == "layers.0.attn.q_proj":
        return ("int8", 32, False)
    return ("int4", 32, False)


@pytest.fixture(scope="module")
def quantized():
    float_model = TinyLM().eval()
    model = quantize(copy.deepcopy(float_model), **SETTINGS)
    return float_model, model


def test_replaces_the_right_layers(quantized):
    float_model, model = quantized
    modules = dict(model.named_modules())
    linears = [name for name, m in float_model.named_modules() if type(m) is nn.Linear]
    assert len(linears) == 13
    for name in linears:
        want = expected_config(name)
        got = modules[name]
        if want is None:
            assert type(got) is nn.Linear, name
            assert torch.equal(got.weight, float_model.get_submodule(name).weight)
        else:
            assert isinstance(got, QuantLinear), name
            assert (got.weight_dtype.name, got.group_size, got.zero_point) == want, name
            assert (got.bias is None) == (float_model.get_submodule(name).bias is None), name


def test_outputs_match_fake_quantization(quantized):
    """Against the float model with dequantized weights, run in fp64. Tolerance 1e-5 * max|logit|: f32
    roundoff of ~10 chained dot products of length <= 96 (u * 96 ~ 6e-6 relative per product, partly
    cancelling) with layer norms in between; quantization itself moves the logits ~100x more (checked)."""
    float_model, model = quantized
    fake = copy.deepcopy(float_model).double()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, QuantLinear):
                fake.get_submodule(name).weight.copy_(reference_weight(m))
        ref = fake(TOKENS)
        got = model(TOKENS)
        unquantized = copy.deepcopy(float_model).double()(TOKENS)
    tol = 1e-5 * float(ref.abs().max())
    assert got.dtype == torch.float32 and got.shape == (2, 5, VOCAB)
    assert float((got.double() - ref).abs().max()) <= tol
    assert float((unquantized - ref).abs().max()) > 100 * tol  # the comparison sees quantization


def test_state_dict_round_trip(quantized):
    _, model = quantized
    state = model.state_dict()
    assert state["layers.0.mlp.down._extra_state"]["dtype"] == "uint4"
    other = quantize(TinyLM(seed=1).eval(), **SETTINGS)
    with torch.no_grad():
        assert not torch.equal(other(TOKENS), model(TOKENS))
        other.load_state_dict(state)
        assert torch.equal(other(TOKENS), model(TOKENS))


def test_globs_match_names_and_dotted_suffixes():
    model = nn.Sequential(nn.Linear(32, 32), nn.ModuleDict({"lm_head": nn.Linear(32, 8), "proj": nn.Linear(32, 32)}))
    quantize(model, "int4", 32, progress=False)
    assert type(model[1]["lm_head"]) is nn.Linear          # default skip "lm_head" matches "1.lm_head"
    assert isinstance(model[0], QuantLinear) and isinstance(model[1]["proj"], QuantLinear)
    model = nn.Sequential(nn.Linear(32, 32), nn.ModuleDict({"lm_head": nn.Linear(32, 8), "proj": nn.Linear(32, 32)}))
    quantize(model, "int4", 32, skip=["1.*"], overrides={"0": ("u2", 16)}, progress=False)
    assert type(model[1]["lm_head"]) is nn.Linear and type(model[1]["proj"]) is nn.Linear
    assert (model[0].weight_dtype.name, model[0].group_size) == ("uint2", 16)


def test_only_exact_linears_and_shared_modules():
    """MultiheadAttention's out_proj (a Linear subclass read through .weight) stays; a linear used twice
    becomes one QuantLinear; a bare nn.Linear is returned quantized."""
    shared = nn.Linear(32, 32)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    model.mha = nn.MultiheadAttention(32, 2, batch_first=True)
    out = quantize(model, "int4", 32, progress=False)
    assert out is model and isinstance(model[0], QuantLinear) and model[0] is model[2]
    assert type(model.mha.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    x = torch.randn(1, 3, 32)
    assert model.mha(x, x, x)[0].shape == (1, 3, 32)
    single = quantize(nn.Linear(32, 8), "int4", 32, progress=False)
    assert isinstance(single, QuantLinear)


def small_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 16))


def test_indivisible_layers_per_channel_by_default():
    with pytest.warns(QuantizationWarning, match=r"one group per row instead: 2 \(K=100\)"):
        model = quantize(small_mlp(), "int4", 32, progress=False)
    assert (model[0].group_size, model[2].group_size) == (32, 100)


def test_indivisible_layers_skip_or_error():
    with pytest.warns(QuantizationWarning, match=r"left in float: 2 \(K=100\)"):
        model = quantize(small_mlp(), "int4", 32, progress=False, indivisible="skip")
    assert isinstance(model[0], QuantLinear) and type(model[2]) is nn.Linear
    model = small_mlp()
    with pytest.raises(QuantizationError, match="layer '2': in_features 100 is not a multiple of group_size 32"):
        quantize(model, "int4", 32, progress=False, indivisible="error")
    assert type(model[0]) is nn.Linear  # unchanged


@pytest.mark.parametrize("kwargs,error,text", [
    (dict(weight_dtype="uint4x"), DTypeError, "unknown dtype"),
    (dict(weight_dtype="bfloat16"), QuantizationError, "1..8-bit"),
    (dict(weight_dtype="float4_e2m1", zero_point=True), QuantizationError, "no zero point"),
    (dict(overrides={"0": ("int4", 32, True, 1)}), QuantizationError, "must be a dtype"),
    (dict(overrides={"0": "int33"}), DTypeError, "unknown dtype"),
    (dict(group_size=-3), QuantizationError, "group_size must be"),
    (dict(indivisible="pad"), QuantizationError, "indivisible must be one of"),
    (dict(backend="gpu"), lowbit.KernelArgumentError, "backend must be one of"),
])
def test_bad_arguments_leave_the_model_unchanged(kwargs, error, text):
    model = small_mlp()
    with pytest.raises(error, match=text):
        quantize(model, **{"progress": False, **kwargs})
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]


def test_bad_weights_leave_the_model_unchanged():
    model = small_mlp()
    with torch.no_grad():
        model[2].weight[3, 5] = float("nan")
    with pytest.raises(QuantizationError, match="finite"):
        quantize(model, "int4", group_size=None, progress=False)
    assert type(model[0]) is nn.Linear


def test_override_matching_nothing_warns():
    with pytest.warns(QuantizationWarning, match="'decoder.*' matched no nn.Linear"):
        quantize(nn.Sequential(nn.Linear(32, 8)), "int4", 32, overrides={"decoder.*": "int8"}, progress=False)


def test_progress_bar(capsys):
    quantize(nn.Sequential(nn.Linear(32, 8), nn.Linear(8, 8)), "int4", None, progress=True)
    err = capsys.readouterr().err
    assert "lowbit: quantizing" in err and "2/2" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize(nn.Sequential(nn.Linear(32, 8)), "int4", None, progress=False)
    assert capsys.readouterr().err == ""
