"""End-to-end benchmark (see deltajax/benchmark.py): python -m benchmarks.end_to_end --preset cpu|gpu."""

from deltajax.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
