"""Compilers, QEMU and the verification harness for exported C.

Finds the tools (and says which Debian packages provide a missing one), builds an
export with the host C compiler or arm-none-eabi-gcc, runs the harness natively or on
QEMU's MPS2 boards with semihosting, and measures flash with arm-none-eabi-size.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from edgeconv.errors import EdgeconvError

from .profiles import TargetProfile

WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZERS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")
ICOUNT_SHIFT = 6  # QEMU -icount: 2^6 ns of virtual time per instruction
SYSTICK_NS = 40  # the MPS2 boards clock SysTick at 25 MHz


class ToolchainMissing(EdgeconvError):
    """A compiler or emulator is not installed; the message names the Debian packages."""

    def __init__(self, tool: str, packages: tuple[str, ...], why: str = ""):
        self.tool = tool
        self.packages = packages
        super().__init__(
            f"{tool} {why or 'not found'}; on Debian/Ubuntu install it with: "
            f"sudo apt-get install {' '.join(packages)}"
        )


ARM_PACKAGES = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi")
QEMU_PACKAGES = ("qemu-system-arm",)


def host_cc() -> str:
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return cand
    raise ToolchainMissing("a C compiler (cc/gcc/clang)", ("gcc",))


def arm_tools() -> dict[str, str]:
    """arm-none-eabi-gcc and -size, with newlib-nano present (for memcpy/memset)."""
    gcc = shutil.which("arm-none-eabi-gcc")
    size = shutil.which("arm-none-eabi-size")
    if not gcc or not size:
        raise ToolchainMissing("arm-none-eabi-gcc", ARM_PACKAGES)
    lib = subprocess.run(
        [gcc, "-mcpu=cortex-m4", "-mthumb", "-print-file-name=libc_nano.a"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not os.path.isabs(lib) or not os.path.exists(lib):
        raise ToolchainMissing(
            "newlib for arm-none-eabi", ("libnewlib-arm-none-eabi",), "(libc_nano.a) not found"
        )
    return {"gcc": gcc, "size": size}


def qemu() -> str:
    exe = shutil.which("qemu-system-arm")
    if not exe:
        raise ToolchainMissing("qemu-system-arm", QEMU_PACKAGES)
    return exe


def _run(cmd: list[str], cwd: Path, what: str, timeout: float = 300) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgeconvError(f"{what} timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        out = (proc.stderr + proc.stdout).strip()
        raise EdgeconvError(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return proc.stdout + proc.stderr


def harness_file(name: str) -> str:
    return (resources.files("edgeconv.targets") / "c" / "harness" / name).read_text()


def c_sources(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.c"))


def build_host(src: Path, build: Path, *, sanitize: bool = False, extra=()) -> Path:
    """The export in `src` + the harness -> a native executable (warnings are errors)."""
    cc = host_cc()
    build.mkdir(parents=True, exist_ok=True)
    (build / "harness.c").write_text(harness_file("harness.c"))
    exe = build / "harness"
    cmd = [cc, *WARNINGS, "-O2", "-I", str(src), *(SANITIZERS if sanitize else ()), *extra]
    cmd += [str(src / f) for f in c_sources(src)] + [str(build / "harness.c"), "-o", str(exe)]
    _run(cmd, build, f"{Path(cc).name} (host build)")
    return exe


def _arm_flags(profile: TargetProfile) -> list[str]:
    return [*profile.cpu_flags, *profile.cflags, *WARNINGS, "-ffunction-sections",
            "-fdata-sections"]  # fmt: skip


def build_arm(src: Path, build: Path, profile: TargetProfile) -> Path:
    """The export + harness + startup -> an ELF for the profile's QEMU board."""
    tools = arm_tools()
    build.mkdir(parents=True, exist_ok=True)
    for name in ("harness.c", "semihosting.h", "startup.c", "mps2.ld"):
        (build / name).write_text(harness_file(name))
    elf = build / "harness.elf"
    cmd = [tools["gcc"], *_arm_flags(profile), "-DEDGECONV_HARNESS_SEMIHOSTING", "-I", str(src),
           "-I", str(build), "-nostartfiles", "--specs=nano.specs", "-T", str(build / "mps2.ld"),
           "-Wl,--gc-sections"]  # fmt: skip
    cmd += [str(src / f) for f in c_sources(src)]
    cmd += [str(build / "harness.c"), str(build / "startup.c"), "-lgcc", "-o", str(elf)]
    _run(cmd, build, "arm-none-eabi-gcc")
    return elf


def _size(size_tool: str, path: Path, cwd: Path) -> dict:
    out = _run([size_tool, str(path)], cwd, "arm-none-eabi-size")
    last = out.strip().splitlines()[-1].split()
    return {"text_bytes": int(last[0]), "data_bytes": int(last[1]), "bss_bytes": int(last[2])}


def measure_flash(src: Path, profile: TargetProfile, build: Path | None = None) -> dict | None:
    """text/data/bss of the model and the runtime code it calls, and nothing else.

    The export is compiled with the profile's flags and partially linked keeping only
    what `edgeconv_model_run` reaches (-r --gc-sections), so the figure excludes the
    harness, startup code and libc (memcpy/memset). None when the profile is the host or
    the ARM toolchain is missing.
    """
    if not profile.cpu_flags:
        return None
    try:
        tools = arm_tools()
    except ToolchainMissing:
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(build or tmp)
        work.mkdir(parents=True, exist_ok=True)
        objs = []
        for f in c_sources(src):
            obj = work / (Path(f).stem + ".o")
            _run([tools["gcc"], *_arm_flags(profile), "-I", str(src), "-c", str(src / f),
                  "-o", str(obj)], work, "arm-none-eabi-gcc")  # fmt: skip
            objs.append(str(obj))
        part = work / "model_partial.o"
        _run([tools["gcc"], *profile.cpu_flags, "-nostdlib", "-Wl,-r", "-Wl,--gc-sections",
              "-Wl,-u,edgeconv_model_run", "-Wl,-u,edgeconv_model_run_arena",
              "-Wl,-u,edgeconv_model_argmax", "-Wl,-e,edgeconv_model_run", *objs,
              "-o", str(part)], work, "arm-none-eabi-gcc (partial link)")  # fmt: skip
        sizes = _size(tools["size"], part, work)
    sizes["compiler"] = f"arm-none-eabi-gcc {' '.join(profile.cpu_flags + profile.cflags)}"
    sizes["flash_bytes"] = sizes["text_bytes"] + sizes["data_bytes"]
    return sizes


_KV = re.compile(r"(\w+)=(\d+)")


def parse_harness(output: str) -> dict[str, int]:
    for line in output.splitlines():
        if line.startswith("edgeconv-harness FAULT"):
            raise EdgeconvError("the model faulted on the emulated board (HardFault)")
        if line.startswith("edgeconv-harness"):
            return {k: int(v) for k, v in _KV.findall(line)}
    raise EdgeconvError(f"harness printed no result line:\n{output[-2000:]}")


def run_host(exe: Path, inputs: Path, outputs: Path, timeout: float = 300) -> dict[str, int]:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0", UBSAN_OPTIONS="print_stacktrace=1")
    try:
        proc = subprocess.run(
            [str(exe), str(inputs), str(outputs)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise EdgeconvError(f"host harness timed out after {timeout:.0f} s") from None
    if proc.returncode not in (0, 1):
        raise EdgeconvError(
            f"host harness failed (exit {proc.returncode}):\n{(proc.stderr + proc.stdout)[-4000:]}"
        )
    return parse_harness(proc.stdout)


def run_qemu(elf: Path, machine: str, workdir: Path, timeout: float) -> dict[str, int]:
    """Run the harness ELF on a QEMU board; it reads inputs.bin and writes outputs.bin in
    `workdir` through semihosting. Instruction counts are deterministic (-icount)."""
    exe = qemu()
    cmd = [exe, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native",
           "-icount", f"shift={ICOUNT_SHIFT},align=off,sleep=off", "-kernel", str(elf)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgeconvError(f"QEMU {machine} timed out after {timeout:.0f} s") from None
    out = proc.stdout + proc.stderr
    res = parse_harness(out)
    if proc.returncode not in (0, 1):
        raise EdgeconvError(f"QEMU {machine} exited with status {proc.returncode}:\n{out[-2000:]}")
    return res


def ticks_to_instructions(ticks: float) -> float:
    """SysTick ticks under -icount shift=S -> guest instructions."""
    return ticks * SYSTICK_NS / (1 << ICOUNT_SHIFT)
