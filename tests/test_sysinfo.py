"""The machine record and the target diagnoses, parsed from fixture copies of a Jetson's files."""

from pathlib import Path

import pytest

from cfnsr import sysinfo

ORIN_RELEASE = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                "DATE: Wed Jan  8 01:49:37 UTC 2025\n")
ORIN_CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                       f"CPU variant\t: 0x1\nCPU part\t: 0xd42\nCPU revision\t: 1\n\n" for i in range(12))


def _jetson(root: Path, locked: bool, release: str = ORIN_RELEASE) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    (root / "proc/cpuinfo").write_text(ORIN_CPUINFO)
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(release)
    for i in range(2):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_max_freq").write_text("2201600\n")
        (d / "scaling_min_freq").write_text("2201600\n" if locked else "729600\n")
    g = root / "sys/devices/platform/bus@0/17000000.gpu/devfreq/17000000.gpu"
    g.mkdir(parents=True)
    (g / "max_freq").write_text("1300500000\n")
    (g / "min_freq").write_text("1300500000\n" if locked else "306000000\n")
    return root


def test_jetson_record_from_its_files(tmp_path):
    root = _jetson(tmp_path, locked=True)
    m = sysinfo.machine(str(root), run=lambda cmd: "NV Power Mode: MAXN\n0\n" if cmd[0] == "nvpmodel" else None)
    j = m["jetson"]
    assert j["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert j["l4t"] == "36.4.3" and j["jetpack"] == "6.1/6.2"
    assert j["power_mode"] == "MAXN" and j["power_mode_id"] == 0 and j["max_power_mode"] is True
    assert j["clocks_locked"] is True
    assert m["processor"] == "12x Cortex-A78AE"  # aarch64 has no "model name": the core type from CPU part
    assert sysinfo.jetson_warnings(m) == []


def test_jetson_not_at_full_power_is_warned(tmp_path):
    root = _jetson(tmp_path, locked=False)
    m = sysinfo.machine(str(root), run=lambda cmd: "NV Power Mode: 30W\n2\n")
    j = m["jetson"]
    assert j["max_power_mode"] is False and j["clocks_locked"] is False
    warnings = sysinfo.jetson_warnings(m)
    assert any("power mode 30W (not MAXN)" in w and "nvpmodel -m 0" in w for w in warnings)
    assert any("not locked" in w and "jetson_clocks" in w for w in warnings)


def test_jetpack7_release_and_a_desktop(tmp_path):
    jp7 = _jetson(tmp_path / "jp7", locked=True, release="# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic\n")
    assert sysinfo.jetson_record(str(jp7), run=lambda c: None)["jetpack"] == "7.0"
    desktop = tmp_path / "desktop"
    (desktop / "proc").mkdir(parents=True)
    (desktop / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD Ryzen 9 7950X 16-Core Processor\n")
    assert sysinfo.jetson_record(str(desktop)) is None
    assert sysinfo.cpu_name(str(desktop)) == "AMD Ryzen 9 7950X 16-Core Processor"


@pytest.mark.parametrize("facts,expected", [
    ({"jetpack": "6.1/6.2", "tensorrt": "11.4.0"}, "TensorRT 11.4.0 is not the one JetPack 6.1/6.2 ships (10.3)"),
    ({"jetpack": "7.0", "tensorrt": "11.4.0"}, "is not the one JetPack 7.0 ships"),
    ({"numpy": "2.2.6", "torch": "2.5.0a0+872d972e41.nv24.08", "torch_numpy_ok": False}, "pip install 'numpy<2'"),
    ({"dists": ["onnxruntime", "onnxruntime-gpu"]}, "both onnxruntime and onnxruntime-gpu are installed"),
    ({"gpu_present": True, "torch": "2.14.1+cpu", "torch_cuda": False}, "is a CPU-only build"),
])
def test_each_known_bad_target_gets_one_line_with_the_fix(facts, expected):
    (line,) = sysinfo.diagnose(facts)
    assert expected in line


def test_a_good_target_gets_no_diagnosis():
    assert sysinfo.diagnose({"jetpack": "6.1/6.2", "tensorrt": "10.3.0.30", "numpy": "1.26.4", "torch_numpy_ok": True,
                             "dists": ["onnxruntime-gpu"], "gpu_present": True, "torch": "2.5.0a0",
                             "torch_cuda": True}) == []
    assert sysinfo.diagnose({"jetpack": "7.0", "tensorrt": "10.13.3.9"}) == []
