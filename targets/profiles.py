"""What each target can hold, so `edgeconv inspect --target` can say whether a model
fits before anyone flashes a board. Budgets are the usable memory of a typical
part of that class (datasheet figures), not guesses about a user's board: a user
with another part passes their own numbers."""

from __future__ import annotations

from dataclasses import dataclass

from edgeconv.errors import EdgeconvError


@dataclass(frozen=True)
class TargetProfile:
    name: str
    kind: str  # "mcu" (C export) or "linux" (Python bundle)
    cpu: str
    flash_bytes: int | None  # None: not a constraint (Linux boards)
    sram_bytes: int | None
    description: str
    # C export (kind "mcu"): compiler flags selecting the core, and optimisation flags
    cpu_flags: tuple[str, ...] = ()
    cflags: tuple[str, ...] = ()
    qemu_machine: str | None = None  # QEMU board that runs this core's code (verify --emulate)


PROFILES: dict[str, TargetProfile] = {
    p.name: p
    for p in (
        TargetProfile(
            "cortex-m0plus",
            "mcu",
            "cortex-m0plus",
            256 * 1024,
            32 * 1024,
            "Cortex-M0+ class, e.g. RP2040-size SRAM budget cut to 32 KiB, 256 KiB flash",
            cpu_flags=("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
            cflags=("-Os",),
            qemu_machine="mps2-an385",  # a Cortex-M3 board: runs ARMv6-M code unchanged
        ),
        TargetProfile(
            "cortex-m4",
            "mcu",
            "cortex-m4",
            1024 * 1024,
            256 * 1024,
            "Cortex-M4F class (STM32F4/nRF52840-size): 1 MiB flash, 256 KiB SRAM",
            cpu_flags=("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"),
            cflags=("-Os",),
            qemu_machine="mps2-an386",
        ),
        TargetProfile(
            "cortex-m7",
            "mcu",
            "cortex-m7",
            2 * 1024 * 1024,
            512 * 1024,
            "Cortex-M7 class (STM32F7/H7-size): 2 MiB flash, 512 KiB SRAM",
            cpu_flags=("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=soft"),
            cflags=("-O2",),
            qemu_machine="mps2-an500",
        ),
        TargetProfile(
            "cortex-m33",
            "mcu",
            "cortex-m33",
            1024 * 1024,
            256 * 1024,
            "Cortex-M33 class (nRF5340/STM32U5-size): 1 MiB flash, 256 KiB SRAM",
            cpu_flags=("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=soft"),
            cflags=("-Os",),
        ),
        TargetProfile(
            "generic-c", "mcu", "host", None, None, "portable C99, no budget", cflags=("-O2",)
        ),
        TargetProfile("rpi4", "linux", "cortex-a72", None, None, "Raspberry Pi 4, 64-bit Pi OS"),
        TargetProfile("rpi5", "linux", "cortex-a76", None, None, "Raspberry Pi 5, 64-bit Pi OS"),
        TargetProfile(
            "rpi-zero2",
            "linux",
            "cortex-a53",
            None,
            512 * 1024 * 1024,
            "Raspberry Pi Zero 2 W, 512 MiB RAM",
        ),
        TargetProfile("rpi-armv7", "linux", "cortex-a7", None, None, "32-bit Pi OS (armhf)"),
    )
}


def get_profile(name: str) -> TargetProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise EdgeconvError(
            f"unknown target {name!r}; known targets: {', '.join(PROFILES)}"
        ) from None
