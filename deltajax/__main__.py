"""Command-line entry point: ``deltajax demo`` / ``python -m deltajax demo``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from deltajax import demo

    return demo.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
