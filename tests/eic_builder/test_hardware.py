from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eic_builder import hardware
from eic_builder.errors import OptionError
from eic_builder.hardware import machine_line, matmul_rate, native_bf16_cpu, resolve_dtype, sequential_read_rate

CPU = torch.device("cpu")
AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})  # an AMD EPYC-like flag set, no native bf16
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_bf16", "amx_tile", "amx_bf16"}
SKYLAKE_X = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl"}  # AVX-512 without bf16: emulated


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, "float32"), (SKYLAKE_X, "float32"),
                                                 (SAPPHIRE_RAPIDS, "bfloat16"),
                                                 (AVX2_ONLY | {"avx512_bf16"}, "bfloat16")])
def test_auto_dtype_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str],
                                          expected: str) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    monkeypatch.setattr(hardware, "_bf16_probe_faster", lambda: pytest.fail("flags known: no probe"))
    assert resolve_dtype("auto", CPU) == expected


@pytest.mark.parametrize("probe", [True, False])
def test_auto_dtype_probes_where_flags_are_unknown(monkeypatch: pytest.MonkeyPatch, probe: bool) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)
    monkeypatch.setattr(hardware, "_bf16_probe_faster", lambda: probe)
    assert native_bf16_cpu() is None
    assert resolve_dtype("auto", CPU) == ("bfloat16" if probe else "float32")


def test_explicit_dtype_is_kept_and_bad_one_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX2_ONLY)
    assert resolve_dtype("bfloat16", CPU) == "bfloat16"
    assert resolve_dtype("float32", CPU) == "float32"
    with pytest.raises(OptionError,
                       match=r"dtype='float16' is not allowed; choose one of 'auto', 'float32', 'bfloat16'"):
        resolve_dtype("float16", CPU)


def test_machine_line_names_model_cores_and_capability() -> None:
    line = machine_line()
    assert line.startswith("CPU: ") and f"capability {torch.backends.cpu.get_cpu_capability()}" in line
    assert " cores, " in line and "bf16 " in line


def test_probes_measure_something(tmp_path: Path) -> None:
    assert matmul_rate(torch.float32, 128, 0.05) > 0.1  # GFLOP/s: any CPU of this century does more
    data = tmp_path / "blob"
    data.write_bytes(b"x" * 3_000_000)
    assert sequential_read_rate([data], block=1 << 16) > 1.0  # MB/s


@pytest.mark.parametrize(("cap", "native"), [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                                             ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_onednn_isa_cap_turns_native_bf16_off(monkeypatch: pytest.MonkeyPatch, cap: str, native: bool) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert native_bf16_cpu(SAPPHIRE_RAPIDS) is native
