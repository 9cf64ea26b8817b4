"""Makes the tests import the deltajax of this checkout.

A shared virtualenv may hold an editable install of another checkout (a
scikit-build-core redirecting finder at the front of ``sys.meta_path``); that
finder would win over ``sys.path`` and the tests would run someone else's code.
It is dropped only when it points elsewhere, so a checkout's own editable
install (and its compiled extension) keeps working.
"""

import os
import sys

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _points_elsewhere(finder) -> bool:
    files = getattr(finder, "known_source_files", None) or {}
    origin = files.get("deltajax")
    return origin is not None and os.path.dirname(os.path.dirname(os.path.abspath(origin))) != _HERE


sys.meta_path[:] = [f for f in sys.meta_path if not _points_elsewhere(f)]
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
for _name in [m for m in sys.modules if m == "deltajax" or m.startswith("deltajax.")]:
    del sys.modules[_name]
