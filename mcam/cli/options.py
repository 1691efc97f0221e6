"""Range-checked option types for the subcommands' argparse parsers: a bad value is a usage error naming the option."""
from __future__ import annotations

import argparse
from typing import Callable

from mcam.errors import InputError


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type` accepting integers >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def fraction(text: str) -> float:
    """An argparse `type` accepting a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def device(text: str) -> str:
    """An argparse `type` for a torch device that exists here ('cpu', 'cuda', 'cuda:1')."""
    from mcam.detector import check_device

    try:
        return check_device(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
