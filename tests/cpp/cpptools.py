"""Helpers of the C++ tests: running the build tools and the programs, and the cfnsr_status codes."""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

CPP = Path(__file__).resolve().parents[2] / "cpp"
STATUS = {"ok": 0, "invalid_argument": 1, "file_not_found": 2, "invalid_artifact": 3, "version_mismatch": 4,
          "backend_unavailable": 5, "input_size": 6, "output_size": 7, "runtime": 8, "internal": 9, "media": 10}


def unavailable(reason: str):
    """Skip, or fail where CFNSR_REQUIRE_CPP=1 (CI installs the whole C++ toolchain)."""
    if os.environ.get("CFNSR_REQUIRE_CPP") == "1":
        pytest.fail(f"C++ runtime cannot be built: {reason}")
    pytest.skip(f"C++ runtime cannot be built here: {reason}")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)


def step(cmd, what):
    r = run(cmd)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr)[-3000:]
        if what == "configure" and "nlohmann_json" in tail:
            unavailable("nlohmann_json is not installed (apt install nlohmann-json3-dev)")
        pytest.fail(f"{what} failed ({' '.join(map(str, cmd))}):\n{tail}")
    return r


def generator() -> list[str]:
    import shutil

    return ["-G", "Ninja"] if shutil.which("ninja") else []


def rewrite_pt2(src: Path, dst: Path, **changes) -> Path:
    """A copy of a package with its metadata entries changed (what a package from elsewhere would carry)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("_metadata.json"):
                meta = json.loads(data)
                meta.update(changes)
                data = json.dumps(meta).encode()
            zout.writestr(item, data)
    return dst
