"""Numbers typed by people. Python's int() and float() also read "1_0" as 10 (the digit separator
of Python source): from a command line that is a typo nobody means as a number, so it is refused."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T", int, float)


def plain_number(text: str, kind: Callable[[str], T] = float) -> T:  # type: ignore[assignment]
    """kind(text) (int or float), but ValueError for text with an underscore."""
    if "_" in text:
        raise ValueError(f"{text!r}: no underscores in numbers")
    return kind(text)
