"""Prove that cfnsr installs on each target, with pip's own resolver for that platform (no target needed).

    bash scripts/check_targets.sh            # all targets; or name some: jetpack6 jetpack7 desktop-cp310 ...

For each target, pip resolves cfnsr's dependencies (read from a freshly built cfnsr wheel, with the target's extras)
under the target's constraint file, for that Python and platform, wheels only (``--only-binary=:all:``,
``--dry-run --report``). It prints what would be installed and fails on a resolution conflict, an sdist, or a
torch / numpy / TensorRT outside the target's range.

On a Jetson, torch (NVIDIA's wheel) and TensorRT (apt) are already there, seen through a --system-site-packages
venv, so they are left out of the requirements and must not appear in the resolution: pip accepts NVIDIA's
pre-release torch (2.5.0a0+...nv24.08) for ``torch>=2.4`` when it is installed. pip's TensorRT libraries for
desktops are sdists that download from NVIDIA's index at build time; they cannot be resolved without that index, so
the desktop rows resolve everything else and name the TensorRT line to run on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version


def manylinux(arch: str, glibc_minor: int) -> list[str]:
    tags = [f"manylinux_2_{n}_{arch}" for n in range(17, glibc_minor + 1)]
    return tags + [f"manylinux2014_{arch}"]


TARGETS = {
    # JetPack 6: Ubuntu 22.04 (glibc 2.35), Python 3.10; NumPy 1.x for NVIDIA's torch; TensorRT 10.3 from apt.
    "jetpack6": dict(python="3.10", arch="aarch64", glibc=35, extras=("cpu", "jetson"), constraint="jetpack6.txt",
                     provided=("torch", "tensorrt"), numpy="<2"),
    # JetPack 7: Ubuntu 24.04 (glibc 2.39), Python 3.12; TensorRT 10.13+ from apt.
    "jetpack7": dict(python="3.12", arch="aarch64", glibc=39, extras=("cpu", "jetson"), constraint="jetpack7.txt",
                     provided=("torch", "tensorrt"), numpy=None),
    **{f"desktop-cp3{m}": dict(python=f"3.{m}", arch="x86_64", glibc=35, extras=("gpu",), constraint=None,
                               provided=(), numpy=None, extra_reqs=("polygraphy>=0.49.22",)) for m in (10, 11, 12)},
}


def build_wheel(root: Path, out: Path) -> Path:
    """cfnsr's wheel, built from a copy of the tree (setuptools leaves build/ and egg-info in the source folder)."""
    import shutil

    src = out / "src"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "demo_out", "target_out", "bench_out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True)
    return next(out.glob("cfnsr-*.whl"))


def requirements(wheel: Path, extras: tuple[str, ...], python: str, arch: str) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    env = {**default_environment(), "python_version": python, "python_full_version": python + ".0",
           "platform_machine": arch, "sys_platform": "linux", "platform_system": "Linux"}
    out = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            req.marker = None
            out.append(req)
    return out


def check(name: str, t: dict, wheel: Path, root: Path) -> tuple[bool, list[str]]:
    reqs = [r for r in requirements(wheel, t["extras"], t["python"], t["arch"]) if r.name not in t["provided"]]
    reqs_s = [str(r) for r in reqs] + list(t.get("extra_reqs", ()))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), "--target", str(Path(tmp) / "t"), "--python-version", t["python"], "--implementation",
               "cp", "--only-binary=:all:"]
        for tag in manylinux(t["arch"], t["glibc"]):
            cmd += ["--platform", tag]
        if t["constraint"]:
            cmd += ["-c", str(root / "constraints" / t["constraint"])]
        p = subprocess.run(cmd + reqs_s, capture_output=True, text=True)
        if p.returncode != 0:
            return False, [f"pip could not resolve: {(p.stderr or p.stdout).strip().splitlines()[-1:]}"]
        install = json.loads(report.read_text())["install"]
        installed = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in install}
        urls = [i["download_info"]["url"] for i in install]
    problems = [f"an sdist would be built: {u}" for u in urls if not u.endswith(".whl")]
    for pkg in t["provided"]:
        if pkg in installed:
            problems.append(f"{pkg} {installed[pkg]} would be installed from PyPI, but the target provides its own")
    numpy_range = Requirement("numpy" + t["numpy"]).specifier if t["numpy"] else None
    if numpy_range is not None and "numpy" in installed and not numpy_range.contains(installed["numpy"]):
        problems.append(f"numpy {installed['numpy']} is outside {t['numpy']}")
    if "torch" in installed and Version(installed["torch"]) < Version("2.4"):
        problems.append(f"torch {installed['torch']} is older than 2.4")
    if any(k.startswith("tensorrt") for k in installed):
        pip_trt = ", ".join(k for k in installed if k.startswith("tensorrt"))
        problems.append(f"a pip TensorRT would be installed: {pip_trt}")
    lines = [f"{k}=={v}" for k, v in sorted(installed.items())]
    return not problems, problems + lines


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    names = sys.argv[1:] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
        return 2
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(root, Path(tmp))
        for name in names:
            t = TARGETS[name]
            ok, lines = check(name, t, wheel, root)
            head = (f"== {name}: cp{t['python'].replace('.', '')} {t['arch']} (glibc <= 2.{t['glibc']}), extras "
                    f"{','.join(t['extras'])}, constraints {t['constraint'] or 'none'}"
                    + (f", provided by the target: {', '.join(t['provided'])}" if t["provided"] else ""))
            print(head, flush=True)
            print(("OK, " if ok else "FAILED, ") + f"{sum('==' in x for x in lines)} packages")
            for line in lines:
                print("   " + line)
            if not ok:
                failed.append(name)
    if any(n.startswith("desktop") for n in names):
        print("desktop TensorRT: pip install 'cfnsr[tensorrt]' --extra-index-url https://pypi.nvidia.com (CUDA 13, "
              "driver >= 580) or 'cfnsr[tensorrt-cu12]' (CUDA 12): resolved on the machine, from NVIDIA's index")
    print("all targets resolve" if not failed else f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
