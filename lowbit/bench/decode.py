"""The decode benchmark: tokens/s of a random-weight Llama on lowbit's runtime against ``transformers``.

A Llama of a preset size (:data:`PRESETS`; ``"1b"`` has TinyLlama-1.1B's shape) is built with random weights
from a ``LlamaConfig`` (offline: nothing is downloaded), timed with ``transformers`` in float32 and in
bfloat16, saved as a checkpoint (bfloat16 safetensors in a temporary folder) and loaded by
:class:`lowbit.runtime.Engine` once per weight type and backend. Every implementation decodes greedily
from the same random prompt for the same number of steps, after a short warm-up; tokens/s counts decode
steps only (the prompt's prefill is excluded), median over ``repeats`` generations.

Bytes per token (for the achieved bandwidth): every weight read once, one embedding row, and the KV cache
at the average context length of the run.

>>> PRESETS["1b"].parameters() // 10**6
1100
"""
from __future__ import annotations

import contextlib
import gc
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

from lowbit.errors import LowbitError

from .config import DecodeSettings
from .results import DecodeRow

__all__ = ["LlamaPreset", "PRESETS", "run_decode", "annotate_decode", "count_decode_steps"]

Tick = Callable[[str], None]


@dataclass(frozen=True)
class LlamaPreset:
    """The shape of a Llama (what ``transformers.LlamaConfig`` needs)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 2048
    description: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def parameters(self) -> int:
        """Parameters (untied embeddings and head, norms included)."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.num_key_value_heads * self.head_dim
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        return 2 * self.vocab_size * h + self.num_hidden_layers * per_layer + h

    def hf_config(self) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                           intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
                           num_attention_heads=self.num_attention_heads,
                           num_key_value_heads=self.num_key_value_heads,
                           max_position_embeddings=self.max_position_embeddings, tie_word_embeddings=False,
                           bos_token_id=1, eos_token_id=2)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["parameters"] = self.parameters()
        return out


PRESETS: dict[str, LlamaPreset] = {
    "1b": LlamaPreset(32000, 2048, 5632, 22, 32, 4, description="TinyLlama-1.1B shape (random weights)"),
    "small": LlamaPreset(32000, 512, 1408, 4, 8, 2, description="a 44M-parameter Llama (random weights)"),
    "tiny": LlamaPreset(256, 128, 256, 2, 2, 1, max_position_embeddings=256,
                        description="a 0.4M-parameter Llama for tests (random weights)"),
}


def count_decode_steps(settings: DecodeSettings) -> int:
    """Progress steps of :func:`run_decode`: build, the transformers runs, one per (type, backend)."""
    baselines = 3 if settings.device.startswith("cuda") else 2
    return 1 + baselines + len(settings.types) * len(settings.backends) * len(settings.activations)


def _preset(name: str) -> LlamaPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise LowbitError(f"unknown decode model {name!r}; expected one of {', '.join(PRESETS)}",
                          hint="--decode-model 1b (the ~1B model the targets use) or small (quick)") from None


def _describe_error(err: BaseException) -> str:
    text = err.message if isinstance(err, LowbitError) else f"{type(err).__name__}: {err}"
    return " ".join(str(text).split())[:300]


@contextlib.contextmanager
def _quiet_transformers() -> Any:
    """Offline, no progress bars or warnings from transformers while we build and save models."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def _kv_bytes_per_token(preset: LlamaPreset, itemsize: int, context: float) -> float:
    return preset.num_hidden_layers * 2 * preset.num_key_value_heads * preset.head_dim * itemsize * context


def _hf_decode_seconds(model: Any, prompt: Any, steps: int) -> float:
    """Greedy decode of ``steps`` tokens after the prompt's prefill; returns the seconds of the steps alone."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync = torch.cuda.synchronize if prompt.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        sync()
        return time.perf_counter() - start


def _hf_row(model: Any, impl: str, preset: LlamaPreset, prompt: Any, settings: DecodeSettings) -> DecodeRow:
    params = list(model.parameters())
    itemsize = params[0].element_size()
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    embed = model.get_input_embeddings().weight
    context = settings.prompt_tokens + (settings.new_tokens + 1) / 2
    per_token = (weight_bytes - embed.numel() * embed.element_size() + preset.hidden_size * itemsize
                 + _kv_bytes_per_token(preset, itemsize, context))
    dtype = str(params[0].dtype).removeprefix("torch.")
    base = DecodeRow(impl=impl, weights=dtype, weight_type=dtype, activations=dtype, status="error",
                     new_tokens=settings.new_tokens,
                     prompt_tokens=settings.prompt_tokens, weight_bytes=weight_bytes, bytes_per_token=per_token,
                     detail=f"transformers LlamaForCausalLM, {dtype}, DynamicCache, greedy")
    try:
        _hf_decode_seconds(model, prompt, min(2, settings.new_tokens))  # warm-up
        samples = [settings.new_tokens / _hf_decode_seconds(model, prompt, settings.new_tokens)
                   for _ in range(settings.repeats)]
    except Exception as err:  # noqa: BLE001 - a failure is a result of the benchmark
        return replace(base, detail=_describe_error(err))
    tps = statistics.median(samples)
    return replace(base, status="ok", tokens_per_s=tps, samples_tokens_per_s=tuple(samples),
                   gbps=per_token * tps / 1e9)


def _lowbit_row(model_dir: str, wtype: str, backend: str, activations: str, prompt_ids: list[int],
                settings: DecodeSettings) -> DecodeRow:
    from lowbit.dtypes import dtype

    zero_point = dtype(wtype).kind == "uint"
    weights = f"{wtype} g{settings.group_size}" + (" zero-point" if zero_point else "")
    base = DecodeRow(impl=f"lowbit-{backend}", weights=weights, weight_type=wtype, activations=activations,
                     status="n/a", new_tokens=settings.new_tokens, prompt_tokens=settings.prompt_tokens)
    from .kernels import backend_status

    reason = backend_status(backend, settings.device)
    if reason is not None:
        return replace(base, detail=f"not available: {reason}")
    try:
        from lowbit.errors import BackendError
        from lowbit.runtime import Engine
    except ImportError as err:
        return replace(base, detail=f"not available: lowbit.runtime cannot be imported ({err})")
    engine = None
    unavailable = ""
    # the backend for every op; else "auto" (lowbit's kernels where registered, torch elsewhere), accepted
    # only when the linears -- nearly all of decode's bytes -- run on this backend
    for runtime_backend in (backend, "auto"):
        try:
            engine = Engine.from_pretrained(model_dir, weights=wtype, group_size=settings.group_size,
                                            zero_point=zero_point, kv=settings.kv, backend=runtime_backend,
                                            activations=activations, device=settings.device)
            break
        except BackendError as err:
            unavailable = unavailable or _describe_error(err)
        except Exception as err:  # noqa: BLE001
            return replace(base, status="error", detail=_describe_error(err))
    if engine is None:
        return replace(base, detail=f"not available: {unavailable}")
    ops = dict(engine.ops.backends)
    if ops.get("linear") != backend:
        return replace(base, detail=f"not available: {unavailable or 'the runtime has no ' + backend + ' linear'} "
                                    f"(the runtime's linear runs on {ops.get('linear')})")
    base = replace(base, detail=f"lowbit.runtime.Engine, KV {settings.kv}; ops {engine.ops.describe()}")
    try:
        engine.generate_ids([prompt_ids], max_new_tokens=min(3, settings.new_tokens + 1), stop_tokens=[])
        stats = [engine.generate_ids([prompt_ids], max_new_tokens=settings.new_tokens + 1, stop_tokens=[]).stats
                 for _ in range(settings.repeats)]
    except Exception as err:  # noqa: BLE001
        return replace(base, status="error", detail=_describe_error(err))
    samples = [s.decode_tokens_per_s for s in stats]
    mid = sorted(stats, key=lambda s: s.decode_tokens_per_s)[len(stats) // 2]
    return replace(base, status="ok", tokens_per_s=statistics.median(samples), samples_tokens_per_s=tuple(samples),
                   weight_bytes=mid.weight_bytes, bytes_per_token=mid.bytes_per_decode_step, gbps=mid.bandwidth_gb_s)


def _hf_dtypes(device: str) -> list[tuple[str, Any]]:
    """The transformers baselines: fp32 and bf16, and fp16 on a CUDA device."""
    import torch

    half = [("transformers-fp16", torch.float16)] if device.startswith("cuda") else []
    return [("transformers-fp32", torch.float32)] + half + [("transformers-bf16", torch.bfloat16)]


def run_decode(settings: DecodeSettings, tick: Tick | None = None) -> tuple[dict[str, Any], list[DecodeRow]]:
    """Time decode for transformers fp32 / bf16 and lowbit at each (type, backend); (model info, rows)."""
    import torch

    tick = tick or (lambda _text: None)
    preset = _preset(settings.model)
    info = {"preset": settings.model, **preset.to_dict(), "new_tokens": settings.new_tokens,
            "prompt_tokens": settings.prompt_tokens, "repeats": settings.repeats, "kv": settings.kv,
            "types": list(settings.types), "backends": list(settings.backends), "group_size": settings.group_size,
            "checkpoint_dtype": "bfloat16"}
    if settings.prompt_tokens + settings.new_tokens + 1 > preset.max_position_embeddings:
        raise LowbitError(f"{settings.prompt_tokens} prompt + {settings.new_tokens} new tokens exceed the "
                          f"{preset.max_position_embeddings}-token context of the {settings.model} model",
                          hint="use fewer --decode-tokens")
    gen = torch.Generator().manual_seed(settings.seed)
    prompt_ids = torch.randint(3, preset.vocab_size, (settings.prompt_tokens,), generator=gen).tolist()
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        reason = f"not available: transformers is not installed ({err}); pip install transformers"
        rows = [DecodeRow(impl=f"transformers-{d}", weights=w, status="n/a", detail=reason)
                for d, w in (("fp32", "float32"), ("bf16", "bfloat16"))]
        rows += [DecodeRow(impl=f"lowbit-{b}", weights=t, weight_type=t, activations=a, status="n/a",
                           detail="not available: the random model is built with transformers")
                 for t in settings.types for b in settings.backends for a in settings.activations]
        return info, rows
    rows: list[DecodeRow] = []
    with _quiet_transformers(), tempfile.TemporaryDirectory(prefix="lowbit-bench-") as tmp:
        from transformers import LlamaForCausalLM

        torch.manual_seed(settings.seed)
        model = LlamaForCausalLM(preset.hf_config()).eval()
        model.to(torch.bfloat16).save_pretrained(tmp)     # (to() converts in place: saved, then back)
        model = model.float().to(settings.device)
        prompt = torch.tensor([prompt_ids], device=settings.device)
        tick(f"decode: built {settings.model} model")
        for impl, dtype in _hf_dtypes(settings.device):
            model = model.to(dtype)
            rows.append(_hf_row(model, impl, preset, prompt, settings))
            tick(f"decode: {impl}")
        del model
        gc.collect()
        for wtype in settings.types:
            for backend in settings.backends:
                for act in settings.activations:
                    rows.append(_lowbit_row(tmp, wtype, backend, act, prompt_ids, settings))
                    gc.collect()
                    tick(f"decode: {wtype} {backend} x {act}")
    return info, rows


def annotate_decode(rows: Sequence[DecodeRow], gbps: float | None) -> list[DecodeRow]:
    """Rows with the roofline fraction (achieved / ``gbps``) and speed-ups over the transformers rows."""
    base = {r.impl: r for r in rows if r.impl.startswith("transformers-") and r.ok}
    out = []
    for r in rows:
        if not r.ok:
            out.append(r)
            continue
        speedup = {}
        if r.impl.startswith("lowbit-"):
            speedup = {name: r.tokens_per_s / b.tokens_per_s for name, b in base.items()}
        roof = r.gbps / gbps if (r.gbps is not None and gbps) else None
        out.append(replace(r, speedup=speedup, roofline=roof))
    return out
