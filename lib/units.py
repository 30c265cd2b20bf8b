"""Sizes in bytes, written the way every evidence file and message writes them."""

from __future__ import annotations

KIB, MIB, GIB = 2**10, 2**20, 2**30


def format_size(n: int | float) -> str:
    """Bytes in the largest unit that keeps a digit before the point: '3.2 GiB', '730 MiB', '12 KiB'."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{int(n)} bytes"
