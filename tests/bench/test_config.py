"""Parsing of ``lowbit bench`` selections: accepted spellings and the errors for bad input."""
from __future__ import annotations

import pytest

from lowbit.bench import config as c
from lowbit.errors import LowbitError


def test_shapes_parse_and_dedupe() -> None:
    assert c.parse_shapes("4096x4096, 11008X4096,4096x4096") == ((4096, 4096), (11008, 4096))
    assert c.parse_shapes("llama") == c.LLAMA_SHAPES == ((4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096))


@pytest.mark.parametrize("bad", ["4096", "4096x", "0x64", "ax4", "4096x4096x2", ","])
def test_bad_shapes_raise_with_hint(bad: str) -> None:
    with pytest.raises(LowbitError) as err:
        c.parse_shapes(bad)
    assert err.value.hint and "--shapes" in err.value.message


def test_types_canonical_and_all() -> None:
    assert c.parse_types("i4,u3,f4e2m1,f8e4m3fn") == ("int4", "uint3", "float4_e2m1", "float8_e4m3fn")
    assert c.parse_types("all") == c.DEFAULT_TYPES
    assert len(c.DEFAULT_TYPES) == 17 and len(set(c.DEFAULT_TYPES)) == 17


@pytest.mark.parametrize("bad", ["int99", "float32", "int1"])
def test_bad_types_raise(bad: str) -> None:
    with pytest.raises(LowbitError):
        c.parse_types(bad)


def test_ints_and_backends() -> None:
    assert c.parse_ints("1,4,16,4", "--m") == (1, 4, 16)
    with pytest.raises(LowbitError, match="--m"):
        c.parse_ints("1,-4", "--m")
    assert c.parse_backends("TVM,interpret") == ("tvm", "interpret")
    assert c.parse_backends("all") == c.KERNEL_BACKENDS
    with pytest.raises(LowbitError, match="unknown backend 'cuda'"):
        c.parse_backends("cuda")
