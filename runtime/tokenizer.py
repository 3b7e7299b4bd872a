"""Tokenizers: a model's ``tokenizer.json`` through the ``tokenizers`` library, else UTF-8 bytes.

:func:`load_tokenizer` picks :class:`HFTokenizer` when the model folder has ``tokenizer.json`` and
:class:`ByteTokenizer` otherwise. The byte tokenizer maps text to its UTF-8 bytes (ids 0-255, no BOS);
ids >= 256 are special tokens and decode to nothing. lowbit's shipped tiny model is byte-level.

>>> tok = ByteTokenizer(vocab_size=257, eos_ids=(256,))
>>> tok.encode("hé")
[104, 195, 169]
>>> tok.decode([104, 195, 169, 256])
'hé'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from lowbit.errors import RuntimeModelError

from .config import ModelConfig


class Tokenizer(Protocol):
    vocab_size: int
    eos_ids: tuple[int, ...]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as token ids; invalid UTF-8 in a decoded id sequence becomes U+FFFD."""

    vocab_size: int
    eos_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.vocab_size < 256:
            raise RuntimeModelError(
                f"the model has no tokenizer.json and a vocabulary of {self.vocab_size} < 256 tokens, so "
                f"byte-level tokenization cannot work", hint="put the model's tokenizer.json in its folder")

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``tokenizer.json`` read by the ``tokenizers`` library (adds the file's special tokens, e.g. BOS)."""

    def __init__(self, path: Path, eos_ids: tuple[int, ...] = ()):
        try:
            from tokenizers import Tokenizer as _Tokenizer
        except ImportError:
            raise RuntimeModelError(f"{path} needs the 'tokenizers' package, which is not installed",
                                    hint="pip install tokenizers (or pip install 'lowbit[runtime]')") from None
        try:
            self._tok: Any = _Tokenizer.from_file(str(path))
        except Exception as err:
            raise RuntimeModelError(f"cannot read {path}: {err}",
                                    hint="restore tokenizer.json from the original checkpoint") from None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eos_ids = eos_ids

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


def load_tokenizer(model_dir: str | Path, config: ModelConfig) -> Tokenizer:
    """The tokenizer of ``model_dir``: ``tokenizer.json`` if present, else :class:`ByteTokenizer`."""
    path = Path(model_dir) / "tokenizer.json"
    if path.is_file():
        return HFTokenizer(path, config.eos_token_ids)
    return ByteTokenizer(config.vocab_size, config.eos_token_ids)
