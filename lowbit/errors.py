"""lowbit's exception types.

Every error a user can cause derives from :class:`LowbitError`. Each carries an optional *location*
(``file:line:col`` plus the source line, drawn with a caret) and an optional *hint* saying what to do.
``str(err)`` is the complete, user-facing message; the CLI prints exactly that and never a traceback.

>>> print(FormatError("weights packed for format 'gemv-v1' cannot be used by 'gemm-v2'",
...                   hint="re-quantize or call QuantizedTensor.repack()"))
weights packed for format 'gemv-v1' cannot be used by 'gemm-v2'
hint: re-quantize or call QuantizedTensor.repack()
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLocation:
    """A position in a source text: 1-based line and column, with the line's text for the caret."""

    file: str
    line: int
    column: int
    source_line: str | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def excerpt(self) -> str:
        """The source line and a caret (``^~~~`` spanning to ``end_column``) under the position."""
        if self.source_line is None:
            return ""
        text = self.source_line.rstrip("\n").expandtabs(4)
        width = 1
        if self.end_column is not None and self.end_column > self.column:
            width = self.end_column - self.column
        caret = " " * max(self.column - 1, 0) + "^" + "~" * (width - 1)
        return f"    {text}\n    {caret}"


class LowbitError(Exception):
    """Base class of every error lowbit reports to a user."""

    def __init__(self, message: str, *, location: SourceLocation | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def __str__(self) -> str:
        head = f"{self.location}: error: {self.message}" if self.location else self.message
        parts = [head]
        if self.location is not None and self.location.source_line is not None:
            parts.append(self.location.excerpt())
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class DTypeError(LowbitError, ValueError):
    """An unknown dtype name, or a value/array of the wrong dtype."""


class PackingError(LowbitError, ValueError):
    """Bad arguments to bit packing / unpacking."""


class QuantizationError(LowbitError, ValueError):
    """Input that cannot be quantized as asked (group size, NaN/inf, shape)."""


class FormatError(LowbitError, ValueError):
    """Packed data in a format other than the one expected (format id or version mismatch, corrupt data)."""


class LayoutError(LowbitError, ValueError):
    """An impossible layout construction or operation (division, rank/shape mismatch)."""


class CompileError(LowbitError):
    """A mistake in a kernel's source, or a kernel the compiler cannot compile.

    Several independent errors can be reported together: ``errors`` holds them all (this error first).
    """

    def __init__(self, message: str, *, location: SourceLocation | None = None, hint: str | None = None,
                 notes: "list[CompileError] | None" = None):
        super().__init__(message, location=location, hint=hint)
        self.notes = list(notes or [])

    @property
    def errors(self) -> "list[CompileError]":
        return [self, *self.notes]

    def __str__(self) -> str:
        text = LowbitError.__str__(self)
        for other in self.notes:
            text += "\n" + LowbitError.__str__(other)
        if self.notes:
            text += f"\n{len(self.errors)} errors"
        return text


class KernelArgumentError(LowbitError, ValueError):
    """A kernel was called with a missing, extra, or wrongly typed / shaped / placed argument."""


class BackendError(LowbitError):
    """A backend (Triton, TVM) is unavailable or failed on code lowbit generated."""


class CacheError(LowbitError):
    """A problem with the on-disk compile cache that cannot be recovered by rebuilding."""


class RuntimeModelError(LowbitError):
    """A broken checkpoint, an unsupported model, a prompt too long, a full KV cache."""


__all__ = [
    "SourceLocation", "LowbitError", "DTypeError", "PackingError", "QuantizationError", "FormatError",
    "LayoutError", "CompileError", "KernelArgumentError", "BackendError", "CacheError", "RuntimeModelError",
]
