"""Argument types shared by the command-line applications (demo, tune, the benchmarks)."""

from __future__ import annotations

import argparse


def frame_size(text: str) -> tuple[int, int]:
    """A frame size 'HxW' of positive ints (e.g. '216x384') -> ``(H, W)``; ``argparse.ArgumentTypeError``
    (naming what was expected and what came) for anything else."""
    h, sep, w = text.strip().lower().partition("x")
    if not (sep and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
        raise argparse.ArgumentTypeError(f"expected HxW of positive ints, e.g. 216x384, got {text!r}")
    return int(h), int(w)


def positive_int(text: str) -> int:
    """A positive int (e.g. a period in frames); ``argparse.ArgumentTypeError`` for anything else."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    """A positive finite number (e.g. a bound on a ratio); ``argparse.ArgumentTypeError`` for anything else."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def fraction_list(text: str) -> tuple[float, ...]:
    """Comma-separated fractions in [0, 1] (e.g. changed pixels: '0,0.05,1' -> ``(0.0, 0.05, 1.0)``);
    ``argparse.ArgumentTypeError`` for anything else."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()  # refused below, with the same message as an out-of-range value
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1], got {text!r}")
    return values


def dense_strides(text: str) -> tuple[int | None, ...]:
    """Comma-separated ``DeltaConfig.dense_from_stride`` values, 'none' for no dense tail ('none,8,16' ->
    ``(None, 8, 16)``); ``argparse.ArgumentTypeError`` for anything else."""
    try:
        values = tuple(None if v.strip().lower() == "none" else int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v is not None and v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive ints or 'none', comma-separated, got {text!r}")
    return values


def keyframe_above(text: str) -> float | str | None:
    """A ``DeltaConfig.keyframe_above`` value: 'auto', 'none' (never a keyframe for activity) or a fraction in
    [0, 1]; ``argparse.ArgumentTypeError`` for anything else."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    try:
        value = float(word)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or a fraction in [0, 1], got {text!r}")
    return value


def dense_stride(text: str) -> int | None:
    """One ``DeltaConfig.dense_from_stride`` value: a positive int, or 'none'; ``argparse.ArgumentTypeError`` for
    anything else."""
    values = dense_strides(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive int or 'none', got {text!r}")
    return values[0]
