"""The decode benchmark on a tiny random Llama: transformers rows timed, lowbit rows timed when the runtime
has the backend's ops, n/a (with the reason) when it has not."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lowbit.bench import decode as D  # noqa: E402
from lowbit.bench.config import DecodeSettings  # noqa: E402

SETTINGS = DecodeSettings(model="tiny", types=("int4", "uint3"), backends=("interpret",), new_tokens=3,
                          prompt_tokens=5, repeats=2)


def test_presets() -> None:
    one_b = D.PRESETS["1b"]
    assert 1.0e9 < one_b.parameters() < 1.2e9
    cfg = one_b.hf_config()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads) == (2048, 22, 4)
    tiny = D.PRESETS["tiny"]
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny.hf_config())
    assert sum(p.numel() for p in model.parameters()) == tiny.parameters()


def test_unavailable_runtime_backend_is_na() -> None:
    ticks: list[str] = []
    info, rows = D.run_decode(SETTINGS, ticks.append)
    assert len(ticks) == D.count_decode_steps(SETTINGS)
    assert info["preset"] == "tiny" and info["parameters"] == D.PRESETS["tiny"].parameters()
    assert [r.impl for r in rows] == ["transformers-fp32", "transformers-bf16"] + ["lowbit-interpret"] * 4
    assert [r.activations for r in rows] == ["float32", "bfloat16"] + ["float32", "bfloat16"] * 2
    for r in rows[:2]:
        assert r.ok and r.tokens_per_s > 0 and len(r.samples_tokens_per_s) == 2 and r.bytes_per_token > 0
    assert rows[1].weight_bytes * 2 == rows[0].weight_bytes          # bf16 half of fp32
    for r in rows[2:]:
        assert r.status == "n/a" and "not available" in r.detail and r.tokens_per_s is None
    out = D.annotate_decode(rows, gbps=10.0)
    assert out[0].roofline == pytest.approx(out[0].gbps / 10.0) and out[2].speedup == {}


def test_lowbit_rows_when_the_runtime_has_the_ops(monkeypatch) -> None:
    """Register the runtime's torch reference ops under the backend's name: the rows are then timed."""
    from lowbit.bench import kernels
    from lowbit.runtime import ops

    ops.registered()  # load the built-in reference ops
    for op in ops.OP_NAMES:
        monkeypatch.setitem(ops._IMPLS, (op, "interpret"), ops._IMPLS[(op, "torch")])
    monkeypatch.setattr(kernels, "backend_status", lambda name, device="cpu": None)
    _, rows = D.run_decode(SETTINGS)
    lowbit = rows[2:]
    assert [(r.weights, r.activations) for r in lowbit] == [
        ("int4 g128", "float32"), ("int4 g128", "bfloat16"), ("uint3 g128 zero-point", "float32"),
        ("uint3 g128 zero-point", "bfloat16")]
    for r in lowbit:
        assert r.ok, r.detail
        assert r.tokens_per_s > 0 and r.weight_bytes > 0 and r.gbps > 0 and "linear=interpret" in r.detail
    out = D.annotate_decode(rows, gbps=10.0)
    fp32 = out[0].tokens_per_s
    assert out[2].speedup["transformers-fp32"] == pytest.approx(out[2].tokens_per_s / fp32)


def test_context_too_long() -> None:
    from lowbit.errors import LowbitError

    with pytest.raises(LowbitError, match="exceed"):
        D.run_decode(DecodeSettings(model="tiny", new_tokens=300))
    with pytest.raises(LowbitError, match="unknown decode model"):
        D.run_decode(DecodeSettings(model="7b"))
