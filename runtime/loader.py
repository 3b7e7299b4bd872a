"""Load a Hugging Face checkpoint folder (config.json + safetensors) into a :class:`Transformer`.

Reads a single ``model.safetensors`` or a sharded checkpoint (``model.safetensors.index.json`` naming the
shard of every tensor), checks every tensor the architecture needs (name, shape, float dtype), and
stores each linear weight as its :class:`~lowbit.runtime.weights.WeightPolicy` says: dense or quantized
with ``lowbit.quant`` at load time. A tqdm progress bar runs while tensors load.

Everything a broken checkpoint can cause is a :class:`RuntimeModelError` naming the file and tensor,
what was expected and what was found.

>>> # model = load_model("path/to/llama", WeightPolicy.parse("u4", group_size=128))
"""
from __future__ import annotations

import difflib
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from lowbit.errors import RuntimeModelError

from .config import ModelConfig
from .model import LINEAR_NAMES, LayerWeights, ModelWeights, Transformer, check_activations, fuse_linears
from .weights import WeightPolicy, store_weight

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Tensors some checkpoints carry that the runtime recomputes or never needs.
_IGNORED = re.compile(r"(.*\.rotary_emb\.inv_freq|lm_head\.weight)$")


def load_model(model_dir: str | Path, policy: WeightPolicy | None = None, *, device: str | torch.device = "cpu",
               progress: bool = False, activations: str = "float32") -> Transformer:
    """Read ``model_dir`` and return a ready :class:`Transformer` (weights stored as ``policy`` says, the
    linears' inputs in ``activations``)."""
    check_activations(activations)            # before any tensor is read
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RuntimeModelError(f"model folder {model_dir} does not exist",
                                hint="pass a folder holding config.json and *.safetensors")
    config = ModelConfig.from_file(model_dir / "config.json")
    policy = policy or WeightPolicy.parse("float32")
    checkpoint = Checkpoint(model_dir)
    expected = config.expected_tensors()
    checkpoint.check(expected)
    unused = policy.unused_overrides(_linear_names(config))
    if unused:
        warnings.warn(f"weight overrides {unused} match no layer of this model (layer names look like "
                      f"'model.layers.0.self_attn.q_proj', 'lm_head')", stacklevel=2)

    from tqdm.auto import tqdm

    device = torch.device(device)
    tensors: dict[str, Any] = {}
    with tqdm(total=len(expected), desc="loading model", unit="tensor", disable=not progress,
              leave=False) as bar:
        for name in expected:
            raw = checkpoint.tensor(name).to(device)
            module = name.rsplit(".", 1)[0]
            if name.endswith(".weight") and raw.dim() == 2 and module != "model.embed_tokens":
                tensors[name] = store_weight(module, raw.to(torch.float32), policy.spec_for(module))
            elif name == "model.embed_tokens.weight":
                tensors[name] = raw.contiguous()  # checkpoint dtype; rows are gathered then upcast
            else:
                tensors[name] = raw.to(torch.float32)
            bar.update(1)
    if config.tie_word_embeddings:
        tensors["lm_head.weight"] = store_weight("lm_head", tensors["model.embed_tokens.weight"].to(torch.float32),
                                                 policy.spec_for("lm_head"))
    return Transformer(config, _assemble(config, tensors), activations=activations)


def _linear_names(config: ModelConfig) -> list[str]:
    names = ["lm_head"]
    for n in range(config.num_layers):
        for lin in LINEAR_NAMES:
            group = "self_attn" if lin in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            names.append(f"model.layers.{n}.{group}.{lin}")
    return names


def _assemble(config: ModelConfig, t: dict[str, Any]) -> ModelWeights:
    layers = []
    for n in range(config.num_layers):
        p = f"model.layers.{n}."
        linears, biases = {}, {}
        for lin in LINEAR_NAMES:
            group = "self_attn." if lin in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp."
            linears[lin] = t[p + group + lin + ".weight"]
            biases[lin] = t.get(p + group + lin + ".bias")
        layers.append(LayerWeights(t[p + "input_layernorm.weight"], t[p + "post_attention_layernorm.weight"],
                                   *fuse_linears(linears, biases)))
    return ModelWeights(t["model.embed_tokens.weight"], tuple(layers), t["model.norm.weight"], t["lm_head.weight"])


class Checkpoint:
    """The safetensors files of a folder: which file holds which tensor, with their shapes and dtypes."""

    def __init__(self, model_dir: Path):
        self.dir = model_dir
        index_map = self._index_map()
        self.files = self._files(index_map)
        self._where: dict[str, Path] = {}
        self._meta: dict[str, tuple[tuple[int, ...], str]] = {}  # name -> (shape, safetensors dtype code)
        self._handles: dict[Path, Any] = {}
        for path in self.files:
            handle = self._open(path)
            for name in handle.keys():
                if index_map is not None and index_map.get(name) not in (None, path.name):
                    continue
                sl = handle.get_slice(name)
                self._where[name] = path
                self._meta[name] = (tuple(sl.get_shape()), sl.get_dtype())
        if index_map is not None:
            for name, shard in index_map.items():
                if name not in self._where:
                    raise RuntimeModelError(
                        f"{self.dir / INDEX_FILE} maps tensor {name!r} to {shard}, but {shard} has no such tensor",
                        hint="the index and the shards come from different checkpoints; re-download or re-save")

    def _index_map(self) -> dict[str, str] | None:
        index = self.dir / INDEX_FILE
        if not index.is_file():
            return None
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise RuntimeModelError(f"{index} is not a valid safetensors index ({err})",
                                    hint="it must be JSON with a 'weight_map' object: tensor name -> shard file") from None
        return {str(k): str(v) for k, v in weight_map.items()}

    def _files(self, index_map: dict[str, str] | None) -> list[Path]:
        if index_map is not None:
            shards = sorted(set(index_map.values()))
            for shard in shards:
                if not (self.dir / shard).is_file():
                    raise RuntimeModelError(f"{self.dir / INDEX_FILE} names shard {shard}, which does not exist "
                                            f"in {self.dir}", hint="copy every shard listed in the index")
            return [self.dir / s for s in shards]
        single = self.dir / SINGLE_FILE
        if single.is_file():
            return [single]
        found = sorted(self.dir.glob("*.safetensors"))
        if not found:
            raise RuntimeModelError(f"no safetensors weights in {self.dir} (expected {SINGLE_FILE} or {INDEX_FILE})",
                                    hint="lowbit reads safetensors checkpoints; convert .bin/.pt files first")
        return found

    def _open(self, path: Path) -> Any:
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt")
        except Exception as err:  # safetensors raises its own error types and OSError/ValueError
            raise RuntimeModelError(f"{path} is not a readable safetensors file: {err}",
                                    hint="the file is corrupt or truncated; download or save it again") from None
        self._handles[path] = handle
        return handle

    def check(self, expected: dict[str, tuple[int, ...]]) -> None:
        """Every expected tensor is present with its shape and a float dtype; a misnamed one is reported
        with its near match. Tensors the model does not use are ignored with a warning."""
        missing = [n for n in expected if n not in self._meta]
        unexpected = [n for n in self._meta if n not in expected and not _IGNORED.match(n)]
        if missing:
            name = missing[0]
            close = difflib.get_close_matches(name, unexpected, n=1, cutoff=0.8)
            where = ", ".join(p.name for p in self.files)
            more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
            hint = (f"the checkpoint has {close[0]!r}: a misnamed tensor? Rename it to {name!r}" if close else
                    "the checkpoint does not match config.json (wrong architecture, layer count or a missing shard)")
            raise RuntimeModelError(f"tensor {name!r} is missing from {where}{more}", hint=hint)
        for name, shape in expected.items():
            got, code = self._meta[name]
            if code not in _DTYPES:
                raise RuntimeModelError(
                    f"tensor {name!r} in {self._where[name].name} has dtype {code}; expected F32, F16 or BF16",
                    hint="lowbit quantizes from floating-point checkpoints; dequantize pre-quantized "
                         "(GPTQ/AWQ/int8) weights first")
            if got != shape:
                raise RuntimeModelError(
                    f"tensor {name!r} in {self._where[name].name} has shape {list(got)}, expected {list(shape)} "
                    f"from config.json", hint="config.json and the weights disagree (hidden_size, heads, "
                                              "head_dim, intermediate_size or vocab_size)")
        if unexpected:
            warnings.warn(f"ignoring {len(unexpected)} tensor(s) the model does not use: {unexpected[:5]}",
                          stacklevel=3)

    def tensor(self, name: str) -> torch.Tensor:
        path = self._where[name]
        try:
            return self._handles[path].get_tensor(name)
        except Exception as err:
            raise RuntimeModelError(f"cannot read tensor {name!r} from {path}: {err}",
                                    hint="the file is corrupt; download or save it again") from None


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
