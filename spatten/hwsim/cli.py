"""`spatten-sim` console script: runs the compiled simulator CLI installed next to spatten._hwsim."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def binary() -> Path:
    from spatten._native import load

    return Path(load("_hwsim").__file__).parent / "spatten-sim"


def main() -> None:
    exe = binary()
    if not exe.is_file():
        sys.exit(f"spatten-sim: the simulator binary is missing ({exe}); rebuild the package (make build)")
    os.execv(exe, [str(exe), *sys.argv[1:]])
