"""The demo (placeholder until the full demo lands)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    raise SystemExit("deltajax demo: not implemented yet")
