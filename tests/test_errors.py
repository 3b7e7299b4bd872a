from lowbit.errors import CompileError, LowbitError, SourceLocation


def test_location_caret_and_hint():
    loc = SourceLocation("k.lbk", 3, 9, "    x = lod(a)\n", end_column=12)
    err = CompileError("unknown name 'lod'", location=loc, hint="did you mean 'load'?")
    text = str(err)
    lines = text.splitlines()
    assert lines[0] == "k.lbk:3:9: error: unknown name 'lod'"
    assert lines[1] == "        x = lod(a)"
    # caret under column 9 (1-based), spanning 3 columns
    assert lines[2] == "    " + " " * 8 + "^~~"
    assert lines[3] == "hint: did you mean 'load'?"
    assert isinstance(err, LowbitError)


def test_several_errors_reported_together():
    first = CompileError("a", location=SourceLocation("f", 1, 1))
    second = CompileError("b", location=SourceLocation("f", 2, 1))
    both = CompileError(first.message, location=first.location, notes=[second])
    assert [e.message for e in both.errors] == ["a", "b"]
    assert str(both).endswith("2 errors")


def test_cli_reports_an_internal_error_in_one_line(monkeypatch, capsys):
    """An unexpected exception inside a command (a lowbit bug) prints one line with where it happened and a
    hint, exit status 70; LOWBIT_TRACEBACK=1 lets it propagate for debugging."""
    import pytest

    from lowbit import cli
    from lowbit.commands import cache as cache_command

    def broken(args):
        raise TypeError("cannot pickle 'Function' object")

    monkeypatch.setattr(cache_command, "run", broken)
    monkeypatch.delenv("LOWBIT_TRACEBACK", raising=False)
    assert cli.main(["cache", "info"]) == 70
    err = capsys.readouterr().err
    assert "lowbit cache: internal error: TypeError: cannot pickle 'Function' object (at test_errors.py:" in err
    assert "Traceback" not in err and "LOWBIT_TRACEBACK=1" in err
    monkeypatch.setenv("LOWBIT_TRACEBACK", "1")
    with pytest.raises(TypeError):
        cli.main(["cache", "info"])
