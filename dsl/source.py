"""Source texts and the mapping from parser positions to the user's real file positions.

A kernel's text is either a whole ``.lbk`` file or the (dedented, decorator-free) source of a
``@lowbit.jit`` function. In the second case the text the parser sees starts at some line of a ``.py``
file and has lost a common indentation; :class:`Source` adds both back so every reported location is the
real one, and the caret sits under the real source line.

>>> src = Source("x = 1\\n", "k.py", line_offset=9, col_offset=4, file_lines=[""] * 9 + ["    x = 1\\n"])
>>> str(src.location(1, 1))
'k.py:10:5'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from lowbit.errors import SourceLocation


@dataclass(frozen=True)
class Span:
    """A region of the parsed text: 1-based line/column of its start and of its end (exclusive column)."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(line: int, column: int) -> "Span":
        return Span(line, column, line, column + 1)


@dataclass(frozen=True)
class Source:
    """A kernel text to parse, with where it lives in a real file.

    ``line_offset``/``col_offset`` are added to parser positions; ``file_lines`` (the whole real file, if
    known) supply the line shown under an error. Without them the parsed text's own lines are used.
    """

    text: str
    filename: str = "<string>"
    line_offset: int = 0
    col_offset: int = 0
    file_lines: list[str] | None = field(default=None, compare=False, repr=False)

    def lines(self) -> list[str]:
        return _split_lines(self.text)

    def real_line(self, line: int) -> int:
        """The real file's line number of parsed line ``line``."""
        return line + self.line_offset

    def source_line(self, line: int) -> str | None:
        """The real text of parsed line ``line`` (None when out of range)."""
        if self.file_lines is not None:
            idx = line + self.line_offset - 1
            if 0 <= idx < len(self.file_lines):
                return self.file_lines[idx].rstrip("\r\n")
            return None
        lines = self.lines()
        if 1 <= line <= len(lines):
            return " " * self.col_offset + lines[line - 1]
        if line == len(lines) + 1:
            return ""
        return None

    def location(self, line: int, column: int, end_column: int | None = None) -> SourceLocation:
        """A :class:`SourceLocation` for a parsed position (1-based), in real-file coordinates."""
        line = max(line, 1)
        column = max(column, 1)
        end = end_column + self.col_offset if end_column is not None and end_column > column else None
        return SourceLocation(self.filename, self.real_line(line), column + self.col_offset,
                              self.source_line(line), end)

    def span_location(self, span: Span | None) -> SourceLocation | None:
        """The location of a span; a span covering several lines is underlined to its first line's end."""
        if span is None:
            return None
        end = span.end_column if span.end_line == span.line else None
        if end is None:
            text = self.source_line(span.line)
            if text is not None:
                end = len(text) + 1 - self.col_offset
        return self.location(span.line, span.column, end)


@lru_cache(maxsize=64)
def _split_lines(text: str) -> list[str]:
    return text.splitlines()
