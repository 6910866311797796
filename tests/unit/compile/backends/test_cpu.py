from __future__ import annotations

from kiln.compile.backends.cpu import isa_level, parse_cpuinfo, read_cpu_info, usable_cpus

HASWELL = """\
processor	: 0
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
flags		: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c avx2 bmi1 bmi2

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz
flags		: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c avx2 bmi1 bmi2
"""

CASCADE_LAKE = """\
processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
flags		: sse4_1 sse4_2 avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""

SAPPHIRE_RAPIDS = """\
processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8488C
flags		: sse4_1 sse4_2 avx avx2 fma avx_vnni avx512f avx512dq avx512bw avx512vl avx512_vnni \
avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""

GRAVITON3 = """\
processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
asimddp sha512 sve asimdfhm i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU architecture: 8
CPU part	: 0xd40

processor	: 1
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
asimddp sha512 sve asimdfhm i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU part	: 0xd40
"""


def test_avx2_only_cpu() -> None:
    info = parse_cpuinfo(HASWELL, "x86_64")
    assert info.model_name == "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz"
    assert info.isa_level == "avx2"
    assert info.num_logical == 2
    assert info.kernel_flags == ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c")


def test_avx512_vnni_cpu() -> None:
    info = parse_cpuinfo(CASCADE_LAKE, "x86_64")
    assert info.isa_level == "avx512_vnni"
    assert "avx512_vnni" in info.kernel_flags
    assert "avx512cd" not in info.kernel_flags  # not a flag ORT's kernels dispatch on


def test_amx_cpu_outranks_everything() -> None:
    info = parse_cpuinfo(SAPPHIRE_RAPIDS, "x86_64")
    assert info.isa_level == "amx"
    assert {"amx_int8", "amx_bf16", "avx512_fp16"} <= set(info.kernel_flags)


def test_arm_cpu_uses_machine_name_and_features() -> None:
    info = parse_cpuinfo(GRAVITON3, "aarch64")
    assert info.isa_level == "aarch64"
    assert info.model_name == "aarch64 implementer 0x41 part 0xd40"
    assert {"asimd", "asimddp", "i8mm", "sve", "bf16"} <= set(info.kernel_flags)
    assert info.num_logical == 2


def test_isa_ladder_edges() -> None:
    # AVX-512F without BW/VL (Knights Landing) gets no avx512 kernels from MLAS's core path.
    assert isa_level({"avx2", "fma", "avx512f", "avx512cd"}, "x86_64") == "avx2"
    assert isa_level({"avx2", "fma", "avx_vnni"}, "x86_64") == "avx2_vnni"
    assert isa_level({"avx2"}, "x86_64") == "sse2"  # an avx2 flag alone (no fma, no avx) is not enough
    assert isa_level({"sse4_1", "sse4_2"}, "AMD64") == "sse4"
    assert isa_level(set(), "arm64") == "aarch64"


def test_empty_cpuinfo_falls_back_to_machine() -> None:
    info = parse_cpuinfo("", "x86_64")
    assert info.model_name == "x86_64"
    assert info.isa_level == "sse2"
    assert info.num_logical == 1


def test_this_machine_reads() -> None:
    info = read_cpu_info()
    assert info.model_name
    assert info.num_logical >= 1
    assert usable_cpus() >= 1
