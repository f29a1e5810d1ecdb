"""Every install route resolves for its platform (pip's resolver, wheels only). Asks the registry: --registry."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.registry
def test_every_target_resolves_with_its_constraints():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_targets.py")], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    out = r.stdout
    jp6 = [ln.strip() for ln in out.split("== jetpack6")[1].split("== ")[0].splitlines() if ln.startswith("   ")]
    assert any(p.startswith("numpy==1.") for p in jp6)
    assert not any(p.startswith(("torch==", "tensorrt")) for p in jp6)  # JetPack's own, never PyPI's
    assert out.count("\nOK, ") == 5 and "all targets resolve" in out


def test_the_jetpack6_constraints_keep_numpy_1_and_jetpacks_tensorrt():
    from packaging.requirements import Requirement

    lines = [ln.split("#")[0].strip() for ln in (ROOT / "constraints" / "jetpack6.txt").read_text().splitlines()]
    reqs = {r.name: r.specifier for r in (Requirement(ln) for ln in lines if ln)}
    assert not reqs["numpy"].contains("2.0.0") and reqs["numpy"].contains("1.26.4")
    assert reqs["tensorrt"].contains("10.3.0.30") and not reqs["tensorrt"].contains("11.4.0")
    jp7 = [ln.split("#")[0].strip() for ln in (ROOT / "constraints" / "jetpack7.txt").read_text().splitlines()]
    trt7 = next(Requirement(ln) for ln in jp7 if ln.startswith("tensorrt")).specifier
    assert trt7.contains("10.13.3.9") and not trt7.contains("11.4.0") and not trt7.contains("10.3.0")
