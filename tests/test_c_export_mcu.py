"""C export (issue 4) on emulated Cortex-M: arm-none-eabi-gcc builds run on QEMU's MPS2
boards (semihosting for I/O and exit, -icount for instruction counts) and are compared
byte for byte with our kernels. Skips, naming the Debian packages, without the
toolchain; .ci/run installs it.

All 1,000 shipped MNIST test digits run on the Cortex-M4 (about 4 s of emulation for
LeNet-5); the Cortex-M0+ and M7 builds run the first 200."""

from __future__ import annotations

import numpy as np
import pytest

import edgeconv
from edgeconv.runtime import Model
from edgeconv.targets import c_build, get_profile
from edgeconv.targets.c_export import flash_estimate
from edgeconv.targets.c_plan import plan_c
from edgeconv.targets.c_verify import verify_c
from tests.conftest import EXAMPLES, case_model_params
from tests.test_c_export import kitchen_sink


def _need_arm() -> None:
    try:
        c_build.arm_tools()
        c_build.qemu()
    except c_build.ToolchainMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def lenet(example_data) -> Model:
    q = edgeconv.quantize_model(edgeconv.load(EXAMPLES / "lenet5.onnx"), example_data["calib"])
    return Model(q.graph, "lenet5.int8")


def _check_emulated(rep: dict, n: int, label: str = "") -> None:
    print(
        f"\n{label} {rep['target']}: {rep['mismatches']} of {rep['elements']} bytes differ, "
        f"text/data/bss {rep['text_bytes']}/{rep['data_bytes']}/{rep['bss_bytes']} B, "
        f"{rep['instructions_per_inference']} instructions per inference, stack "
        f"{rep['stack_bytes']} B, arena {rep['arena_bytes']} B (touched "
        f"{rep['arena_touched_bytes']})"
    )
    assert rep["emulated"] and rep["samples"] == n
    assert rep["mismatches"] == 0, rep.get("first_mismatch")
    assert rep["arena_touched_bytes"] == rep["arena_bytes"] and rep["arena_guard_intact"]
    # the static arena is the model's whole .bss; weights and code are text (flash)
    assert rep["bss_bytes"] == (rep["arena_bytes"] + 3) // 4 * 4 and rep["data_bytes"] == 0
    assert rep["instructions_per_inference"] > 0
    # -icount makes the count deterministic; only data-dependent branches vary
    assert rep["instructions_max"] - rep["instructions_min"] < 0.01 * rep["instructions_min"]


def test_lenet_cortex_m4_all_1000_images_byte_identical(lenet, example_data):
    _need_arm()
    rep = verify_c(lenet, "cortex-m4", example_data["x"], emulate=True)
    _check_emulated(rep, 1000, "lenet5.onnx")
    assert rep["board"] == "mps2-an386" and "-mcpu=cortex-m4" in rep["compiler"]
    plan = plan_c(lenet.graph)
    assert plan.const_bytes < rep["text_bytes"] < plan.const_bytes + 4096
    assert rep["stack_bytes"] < 1024


@pytest.mark.parametrize("target", ["cortex-m0plus", "cortex-m7"])
def test_lenet_other_cores_200_images(lenet, example_data, target):
    _need_arm()
    rep = verify_c(lenet, target, example_data["x"][:200], emulate=True)
    _check_emulated(rep, 200, "lenet5.onnx")
    assert rep["board"] == get_profile(target).qemu_machine


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_every_kernel_on_cortex_m4(rounding):
    """The kitchen-sink graph (every C kernel) on the M4, whose dot product uses SMLAD."""
    _need_arm()
    b, outs = kitchen_sink()
    x = np.random.default_rng(3).standard_normal((100, *b.shape("x")[1:])).astype(np.float32)
    for which in ("dwconv_maxpool", "softmax"):
        g = b.quantized(outs[which])
        rep = verify_c(Model(g, which, rounding=rounding), "cortex-m4", x, emulate=True)
        _check_emulated(rep, 100)


@pytest.mark.parametrize("case", case_model_params())
def test_shared_case_cortex_m4_byte_identical(case, int8_case):
    _need_arm()
    model, x = int8_case(case)
    rep = verify_c(model, "cortex-m4", x, emulate=True)
    _check_emulated(rep, len(x), case.name)


def test_flash_estimate_tracks_the_measured_size(lenet):
    """`inspect` estimates flash without a compiler; keep the estimate honest."""
    _need_arm()
    b, outs = kitchen_sink()
    for graph in (lenet.graph, b.quantized(outs["softmax"])):
        plan = plan_c(graph)
        est = flash_estimate(plan)["flash_bytes"]
        import tempfile
        from pathlib import Path

        from edgeconv.targets.c_export import export_c

        with tempfile.TemporaryDirectory() as tmp:
            rep = export_c(graph, Path(tmp) / "c", get_profile("cortex-m4"), compare_tflm=False)
        measured = rep["flash_measured"]["flash_bytes"]
        assert abs(est - measured) <= 0.15 * measured + 256, (est, measured)


@pytest.mark.parametrize("target", ["cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m33"])
def test_every_mcu_profile_compiles_warning_free(tmp_path, lenet, target):
    """-Wall -Wextra -Werror -pedantic with each profile's -mcpu flags (the M33 has no QEMU
    board here, so this is its only check)."""
    _need_arm()
    from edgeconv.targets.c_export import export_c

    b, outs = kitchen_sink()
    for i, graph in enumerate((lenet.graph, b.quantized(outs["softmax"]))):
        rep = export_c(graph, tmp_path / f"{target}{i}", get_profile(target), compare_tflm=False)
        m = rep["flash_measured"]
        assert m["text_bytes"] > rep["const_bytes"] and m["data_bytes"] == 0
        assert m["bss_bytes"] == (rep["arena_bytes"] + 3) // 4 * 4
