"""The Pi bundle on emulated Raspberry Pi OS (Debian bookworm under qemu-user, chroot).

Needs root, debootstrap, qemu-user-static, binfmt-support and the root filesystems cached by
`python -m edgeconv.targets.rpi.emulate` (in $EDGECONV_RPI_CACHE, default
/var/cache/edgeconv-rpi); skipped with the reason otherwise. Uses the root filesystems'
own Debian Python 3.11 with Debian's numpy 1.24.2 and numba 0.56.4: Numba works on arm64
and aborts on armhf, where the probe must catch it. The full check (pip wheels, Pi 4 / Pi 5
CPUs, 1,000 images, the test suite under Debian's numba) is emulate.py itself, run by CI.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import edgeconv
from edgeconv.targets import get_profile
from edgeconv.targets.rpi import emulate
from edgeconv.targets.rpi.bundle import export_bundle
from tests.conftest import EXAMPLES

N_IMAGES = 200


def _ready(arch: str) -> None:
    why = emulate.tools_problem(arch)
    if why:
        pytest.skip(f"emulated {arch} Pi: {why}")
    if not emulate.rootfs_ready(emulate.DEFAULT_CACHE, arch):
        pytest.skip(
            f"emulated {arch} Pi: no cached root filesystem in "
            f"{emulate.rootfs_dir(emulate.DEFAULT_CACHE, arch)} (build it with "
            "`sudo python -m edgeconv.targets.rpi.emulate --build-only`)"
        )


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """int8 LeNet-5, MNIST PNGs and the x86-64 reference outputs."""
    from edgeconv.api import quantize_model

    work = tmp_path_factory.mktemp("emu")
    calib = np.load(EXAMPLES / "mnist_calib_200.npz")["x"]
    q = quantize_model(edgeconv.load(EXAMPLES / "lenet5.onnx"), calib, limit=200)
    model = edgeconv.Model(q.graph, "lenet5.int8")
    x = np.load(EXAMPLES / "mnist_test_1k.npz")["x"][:N_IMAGES]
    (work / "images").mkdir()
    for i, img in enumerate(x):
        (work / "images" / f"mnist{i:04d}.png").write_bytes(emulate._png(img))
    return work, model, model.run(x)


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_bundle_on_emulated_pi_matches_x86_64(arch, staged):
    _ready(arch)
    work, model, ref = staged
    target = emulate.ARCHES[arch]["target"]
    root = emulate.rootfs_dir(emulate.DEFAULT_CACHE, arch)
    inside = f"/root/edgeconv-test-{os.getpid()}"
    dest = root / inside.lstrip("/")
    shutil.rmtree(dest, ignore_errors=True)
    try:
        shutil.copytree(work / "images", dest / "images")
        export_bundle(model, dest / "bundle", get_profile(target))
        with emulate.Chroot(root, arch) as ch:
            env = {"EDGECONV_CACHE_DIR": f"{inside}/state"}
            r = ch.run(["python3", f"{inside}/bundle/run.py", "--info", "--json"], env=env)
            info = json.loads(r.stdout)
            r = ch.run(["python3", f"{inside}/bundle/run.py", f"{inside}/images", "--save",
                        f"{inside}/out.npy"], env=env)
            again = ch.run(["python3", f"{inside}/bundle/run.py", "--info", "--json"], env=env)
        got = np.load(dest / "out.npy")
        assert info["machine"] == emulate.ARCHES[arch]["machine"]
        assert info["cpu"]["neon"] is True
        if arch == "arm64":
            assert info["backend"] == "numba", info["backend_reason"]
            assert info["numba"] == "0.56.4"  # Debian bookworm's python3-numba
            assert r.stderr.count(b"using the NumPy backend") == 0
        else:
            # Debian armhf numba aborts on the first compile: caught in the probe's child
            assert info["backend"] == "numpy"
            assert "SIGABRT" in info["backend_reason"]
            assert "__sync_fetch_and_add_4" in info["backend_reason"]
            assert r.stderr.count(b"using the NumPy backend") == 1
            # the verdict is cached: the second process did not probe again
            assert json.loads(again.stdout)["backend_reason"] == info["backend_reason"]
        assert got.shape == ref.shape and got.tobytes() == ref.tobytes()
    finally:
        shutil.rmtree(dest, ignore_errors=True)
