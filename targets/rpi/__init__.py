"""Raspberry Pi (Linux, Python) target: `edgeconv export --target rpi4|rpi5|rpi-zero2|rpi-armv7`
writes a self-contained bundle (``bundle``); ``emulate`` checks bundles on emulated Pi OS
(Debian bookworm arm64/armhf under qemu-user), ``coldstart`` measures fresh-process start-up.
Installed as ``edgeconv.targets.rpi``."""
