"""Random mutations of the examples (tokens and characters deleted, swapped, inserted, replaced) either
compile or raise CompileError -- never another exception -- and `lowbit check` exits 0 or 1 on them."""
from __future__ import annotations

import importlib.util
import random
import re
import sys
from pathlib import Path

import pytest

from lowbit.dsl.frontend import compile_function, parse_file_text
from lowbit.dsl.nodes import FunctionDef
from lowbit.dsl.parser import parse
from lowbit.dsl.scope import PythonScope
from lowbit.dsl.source import Source
from lowbit.errors import CompileError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_TOKEN = re.compile(r"\n[ \t]*|\w+|[^\w\s]")
_EXTRA_TOKENS = ["(", ")", "[", "]", ":", ",", "=", "==", "+", "*", "//", "-", ".", "None", "True", "for", "in",
                 "if", "else", "elif", "def", "return", "while", "pass", "range", "0", "1", "-1", "2.5", "1e400",
                 "99999999999999999999", "\n", "\n    ", "\n        ", "\t", "    ", "'s'", '"""', "#", "\\", "@",
                 "lambda", "import", "load", "store", "grid", "block", "dot", "cast", "f16", "u4", "Out", "const",
                 "x", "acc", "axis=", "layout=spatial(4, 8)", "[:, None]", "**", "<<", "~", "not", "and"]
_CHARS = "()[]:,.=+-*/%<>!&|^~@#'\"\\ \t\n_aAzZ09eE{}$?`;"
_NAMES = ["load", "store", "dot", "cast", "view", "zeros", "full", "arange", "where", "sum", "max", "min", "exp",
          "reshape", "permute", "transpose", "expand_dims", "broadcast_to", "block", "num_blocks", "grid", "cdiv",
          "maximum", "f16", "f32", "bf16", "i32", "u8", "u4", "int3", "float4_e2m1", "bool", "Out", "const",
          "dtype", "layout", "spatial", "local", "alloc_shared", "load_shared", "copy_to_shared", "barrier",
          "range", "N", "M", "K", "shape", "dtype", "nbits"]
_NUMBERS = ["0", "1", "-1", "2", "3", "7", "16", "64", "1000", "0.5", "-2.0", "1e30", "True", "None"]


def _load(name):
    key = f"lowbit_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, EXAMPLES / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        toks = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        if op >= 8 and toks:  # keep the syntax, change the meaning: another name or number
            want = str.isidentifier if op == 8 else (lambda t: t[:1].isdigit())
            spots = [(s, e) for s, e in toks if want(text[s:e])]
            if spots:
                s, e = rng.choice(spots)
                if op == 8:
                    names = [text[a:b] for a, b in toks if text[a:b].isidentifier()]
                    new = rng.choice(_NAMES) if rng.random() < 0.5 else rng.choice(names)
                else:
                    new = rng.choice(_NUMBERS)
                text = text[:s] + new + text[e:]
        elif op < 4 and toks:
            i = rng.randrange(len(toks))
            s, e = toks[i]
            if op == 0:    # delete a token
                text = text[:s] + text[e:]
            elif op == 1 and i + 1 < len(toks):  # swap two adjacent tokens
                s2, e2 = toks[i + 1]
                text = text[:s] + text[s2:e2] + text[e:s2] + text[s:e] + text[e2:]
            elif op == 2:  # insert a token (from the text itself or a list of troublemakers)
                pool_tok = rng.choice(_EXTRA_TOKENS) if rng.random() < 0.5 else text[slice(*rng.choice(toks))]
                text = text[:s] + pool_tok + " " * rng.randint(0, 1) + text[s:]
            else:          # duplicate a token
                text = text[:e] + text[s:e] + text[e:]
        elif text:
            i = rng.randrange(len(text))
            if op == 4:
                text = text[:i] + text[i + 1:]
            elif op == 5:
                text = text[:i] + rng.choice(_CHARS) + text[i:]
            elif op == 6:
                text = text[:i] + rng.choice(_CHARS) + text[i + 1:]
            elif i + 1 < len(text):
                text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text


def compile_kernel_file(text: str) -> int:
    """Compile every kernel of a kernel-file text; returns how many compiled cleanly."""
    kfile = parse_file_text(text, "fuzz.lbk")
    ok = 0
    for name in kfile.kernel_names():
        try:
            kfile.compile(name)
            ok += 1
        except CompileError:
            pass
    return ok


def compile_jit_text(text: str, original) -> int:
    src = original.kernel_source
    source = Source(text, src.filename, src.line_offset, src.col_offset, src.file_lines)
    module = parse(source)
    ok = 0
    for fn in module.body:
        if isinstance(fn, FunctionDef):
            try:
                compile_function(fn, source, PythonScope.of_function(original.fn))
                ok += 1
            except CompileError:
                pass
    return ok


def test_mutations_give_success_or_compile_error():
    rng = random.Random(20240611)
    lbk = [(EXAMPLES / f"{n}.lbk").read_text() for n in ("vector_add", "softmax", "lowbit_gemm")]
    jits = [_load("gemm_fp16").gemm_fp16, _load("decode_attention").decode_attention]
    outcomes = {"ok": 0, "error": 0}
    for i in range(2000):
        if i % 5 < 3:
            text, original = lbk[i % 3], None
        else:
            original = jits[i % 2]
            text = original.kernel_source.text
        mutated = mutate(text, rng)
        try:
            ok = compile_kernel_file(mutated) if original is None else compile_jit_text(mutated, original)
            outcomes["ok" if ok else "error"] += 1
        except CompileError as err:
            outcomes["error"] += 1
            str(err)  # rendering the message must not fail either
            assert err.location is None or err.location.line >= 1
        except Exception as exc:  # pragma: no cover - the failure report
            pytest.fail(f"mutation {i} raised {type(exc).__name__}: {exc}\n--- source ---\n{mutated}")
    # the mutations exercise both outcomes (neither all-broken nor all-harmless)
    assert outcomes["ok"] > 200 and outcomes["error"] > 800, outcomes


def test_check_command_exits_0_or_1_on_mutations(cli_main, tmp_path, capsys):
    rng = random.Random(7)
    texts = [(EXAMPLES / f"{n}.lbk").read_text() for n in ("vector_add", "softmax", "lowbit_gemm")]
    codes = set()
    for i in range(60):
        path = tmp_path / f"m{i}.lbk"
        path.write_text(mutate(texts[i % 3], rng))
        rc = cli_main(["check", str(path)] + (["--emit", "ir"] if i % 2 else []))
        captured = capsys.readouterr()
        assert rc in (0, 1), captured.err
        assert "internal compiler error" not in captured.err and "Traceback" not in captured.err, captured.err
        if rc == 1:
            assert f"{path}:" in captured.err or "error" in captured.err
        codes.add(rc)
    assert codes == {0, 1}
