"""Fixtures shared by every stage's tests."""

from __future__ import annotations

import sys
from typing import Callable

import pytest


@pytest.fixture
def cli(monkeypatch, capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `dfdcap ARGS...` in this process through the real entry point (main(): one-line
    errors, exit codes); returns (exit code, stdout, stderr)."""
    from dfdcap.cli import main

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["dfdcap", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run
