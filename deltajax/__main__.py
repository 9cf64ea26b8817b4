"""Command line: ``deltajax demo | tune | benchmark | fetch`` (also ``python -m deltajax ...``)."""

from __future__ import annotations

import sys

USAGE = """usage: deltajax {demo,tune,benchmark,fetch} [options]

  demo       a pretrained CNN on a video, dense and delta side by side (the default)
  tune       per-layer thresholds for a model and a clip within an accuracy budget
  benchmark  the end-to-end benchmark (pass --help for its options)
  fetch      download weights no wheel installs into the cache (fetch pose: OpenPose MobileNet-thin)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and not argv[0].startswith("-") else "demo"
    if command == "demo":
        from deltajax import demo

        return demo.main(argv)
    if command == "tune":
        from deltajax import tune_cli

        return tune_cli.main(argv)
    if command == "benchmark":
        from deltajax import benchmark

        return benchmark.main(argv)
    if command == "fetch":
        from deltajax.models import fetch

        return fetch.main(argv)
    print(USAGE, file=sys.stderr)
    return 0 if command in ("-h", "--help", "help") else 2


if __name__ == "__main__":
    raise SystemExit(main())
