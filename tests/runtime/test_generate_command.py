"""``lowbit generate``: the command module's arguments and run(), on the shipped tiny model."""
from __future__ import annotations

import argparse

import pytest

from lowbit.errors import RuntimeModelError
from lowbit.runtime import generate_command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lowbit generate")
    generate_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults():
    args = parse("--prompt", "hi")
    assert args.model is None and args.weights == "u4" and args.group_size == 128 and args.kv == "f16"
    assert args.backend == "auto" and args.temperature == 0.0 and args.prompt == ["hi"]


def test_device_is_checked_before_loading():
    from lowbit.errors import LowbitError

    with pytest.raises(LowbitError, match="unknown device 'tpu'"):
        generate_command.run(parse("--prompt", "hi", "--device", "tpu"))
    if not __import__("torch").cuda.is_available():
        with pytest.raises(LowbitError, match="no CUDA device"):
            generate_command.run(parse("--prompt", "hi", "--device", "cuda"))


def test_generate_prints_the_continuation_and_statistics(capsys):
    code = generate_command.run(parse("--prompt", "Beautiful is better than", "--weights", "u8", "--kv", "i8",
                                      "--max-new-tokens", "7", "--page-size", "4"))
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "Beautiful is better than ugly.\n\n"
    assert "tok/s" in err and "GB/s" in err and "int8" in err


def test_batch_sampling_and_overrides(capsys):
    code = generate_command.run(parse("--prompt", "Simple is", "--prompt", "Flat is", "--weights", "i4",
                                      "--group-size", "32", "--override", "lm_head=f16", "--temperature", "0.8",
                                      "--top-p", "0.9", "--seed", "3", "--max-new-tokens", "5", "--quiet"))
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert out.count("--- [") == 2 and "Simple is" in out and "Flat is" in out


def test_bf16_activations_generate_as_the_torch_reference(capsys):
    args = ("--prompt", "Simple is", "--weights", "i4", "--group-size", "32", "--activations", "bfloat16",
            "--max-new-tokens", "5", "--quiet")
    assert generate_command.run(parse(*args)) == 0
    got = capsys.readouterr().out
    assert generate_command.run(parse(*args, "--backend", "torch")) == 0
    assert capsys.readouterr().out == got and "Simple is" in got


def test_bad_override_is_a_user_error():
    with pytest.raises(RuntimeModelError, match="is not PATTERN=TYPE"):
        generate_command.run(parse("--prompt", "x", "--override", "lm_head"))


def test_command_module_imports_lightly():
    import subprocess
    import sys

    code = ("import sys; import lowbit.runtime.generate_command; "
            "assert 'torch' not in sys.modules, 'torch imported at module level'")
    subprocess.run([sys.executable, "-c", code], check=True)
