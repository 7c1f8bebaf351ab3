"""C export (issue 4), host side: the memory planner, the generated C compiled with the
system C compiler (-Wall -Wextra -Werror -pedantic, ASan + UBSan) and compared byte for
byte with our kernels, the arena guard-byte check, budgets, CLI, toolchain messages,
and the arena of TFLite Micro for the same model.

The Cortex-M builds under QEMU are in test_c_export_mcu.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import edgeconv
from edgeconv.cli import main
from edgeconv.errors import EdgeconvError
from edgeconv.ir import Graph, Op, Tensor
from edgeconv.quantize import quantize_graph
from edgeconv.runtime import Model
from edgeconv.targets import c_build, get_profile
from edgeconv.targets.c_export import export_c, inspect_c
from edgeconv.targets.c_plan import plan_c
from edgeconv.targets.c_verify import verify_c
from tests.conftest import EXAMPLES, case_model_params


def _need_cc() -> None:
    try:
        c_build.host_cc()
    except c_build.ToolchainMissing as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def lenet(example_data) -> Model:
    q = edgeconv.quantize_model(edgeconv.load(EXAMPLES / "lenet5.onnx"), example_data["calib"])
    return Model(q.graph, "lenet5.int8")


# ------------------------------------------------------------------ small graph builder


class GraphBuilder:
    """Float IR graphs with random weights, quantized by edgeconv's PTQ before use."""

    def __init__(self, in_shape, seed=0):
        self.rng = np.random.default_rng(seed)
        self.t = {"x": Tensor("x", tuple(in_shape))}
        self.ops: list[Op] = []
        self.n = 0

    def _name(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, arr):
        name = self._name("c")
        self.t[name] = Tensor(name, arr.shape, data=arr.astype(np.float32))
        return name

    def op(self, kind, inputs, out_shape, **attrs):
        out = self._name("t")
        self.t[out] = Tensor(out, tuple(int(d) for d in out_shape))
        self.ops.append(Op(kind, inputs, [out], attrs, f"{kind}_{out}"))
        return out

    def shape(self, name):
        return self.t[name].shape

    def rand(self, shape, scale):
        return self.rng.standard_normal(shape) * scale

    def conv(self, x, cout, k, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0), act="none",
             depthwise=False, dm=1):  # fmt: skip
        _, h, w, c = self.shape(x)
        if depthwise:
            cout = c * dm
            wt = self.rand((1, k[0], k[1], cout), 0.5)
        else:
            wt = self.rand((cout, k[0], k[1], c), 0.5)
        oh = (h + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
        ow = (w + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
        ins = [x, self.const(wt), self.const(self.rand((cout,), 0.2))]
        return self.op("conv", ins, (1, oh, ow, cout), stride=stride, dilation=dil, pads=pads,
                       activation=act, depthwise=depthwise, depth_multiplier=dm)  # fmt: skip

    def pool(self, x, mode, k, stride, pads=(0, 0, 0, 0), cip=False):
        _, h, w, c = self.shape(x)
        oh = (h + pads[0] + pads[2] - k[0]) // stride[0] + 1
        ow = (w + pads[1] + pads[3] - k[1]) // stride[1] + 1
        return self.op("pool", [x], (1, oh, ow, c), mode=mode, kernel=k, stride=stride,
                       pads=pads, activation="none", count_include_pad=cip)  # fmt: skip

    def fc(self, x, cout, act="none"):
        k = self.shape(x)[-1]
        w, b = self.const(self.rand((cout, k), 0.3)), self.const(self.rand((cout,), 0.2))
        return self.op("fc", [x, w, b], (1, cout), activation=act)

    def flatten(self, x):
        n = int(np.prod(self.shape(x)[1:]))
        return self.op("reshape", [x], (1, n), shape=(n,))

    def quantized(self, out, n_calib=64, seed=5) -> Graph:
        g = Graph(dict(self.t), list(self.ops), ["x"], [out])
        g.prune()
        g.validate()
        calib = np.random.default_rng(seed).standard_normal((n_calib, *self.shape("x")[1:]))
        return quantize_graph(g, calib.astype(np.float32)).graph


def kitchen_sink() -> tuple[GraphBuilder, dict[str, str]]:
    """Every op kind the C runtime has, with strides, dilations, asymmetric padding,
    depth multiplier, overlapping pool windows, count_include_pad and broadcasting."""
    b = GraphBuilder((1, 12, 11, 3), seed=1)
    x = b.op("pad", ["x"], (1, 13, 14, 3), pads=(1, 2, 0, 1))
    a = b.conv(x, 5, (3, 3), stride=(2, 1), pads=(1, 0, 1, 1), act="relu6")
    d = b.conv(a, 0, (3, 2), dil=(2, 2), pads=(2, 1, 2, 1), depthwise=True, dm=2)
    p = b.pool(d, "max", (3, 3), (2, 2), pads=(1, 1, 1, 1))  # fused with the depthwise
    t = b.op("act", [p], b.shape(p), fn="tanh")
    av = b.pool(t, "avg", (2, 2), (1, 1), pads=(0, 0, 1, 1), cip=True)
    gp = b.pool(av, "avg", b.shape(av)[1:3], (1, 1))
    s = b.op("act", [gp], b.shape(gp), fn="sigmoid")
    ad = b.op("add", [av, s], b.shape(av), activation="relu")  # broadcast over H, W
    _, h, w, c = b.shape(ad)
    tr = b.op("transpose", [ad], (1, c, h, w), perm=(0, 3, 1, 2))
    f = b.fc(b.flatten(tr), 7)
    sm = b.op("softmax", [f], (1, 7), beta=1.0)
    mp = b.pool(b.conv(x, 4, (2, 2), pads=(0, 0, 1, 1)), "max", (2, 2), (2, 2), pads=(0, 0, 1, 1))
    mx = b.pool(b.op("act", [mp], b.shape(mp), fn="relu"), "max", (2, 2), (1, 1), pads=(1, 1, 0, 0))
    return b, {"dwconv_maxpool": p, "add": ad, "transpose": tr, "softmax": sm, "maxpool": mx}


@pytest.fixture(scope="module")
def sink():
    return kitchen_sink()


def _inputs(shape, n=60, seed=7):
    return np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)


# ------------------------------------------------------------------ planner


def test_lenet_plan_fuses_conv_pool_and_reaches_the_lower_bound(lenet):
    plan = plan_c(lenet.graph)
    assert [s.kind for s in plan.steps] == ["conv_maxpool", "conv_maxpool", "fc", "fc", "fc"]
    assert plan.arena_bytes == plan.lower_bound_bytes == 1176 + 400
    unfused = plan_c(lenet.graph, fuse=False)
    # without fusion the 28x28x6 conv output (4,704 B) has to exist
    assert unfused.arena_bytes >= 28 * 28 * 6 + 14 * 14 * 6 - 1 > plan.arena_bytes
    # the caller's buffers: the first step reads the input in place, the last writes output
    assert plan.buffer_of(plan.steps[0].inputs[0]).storage == "input"
    assert plan.buffer_of(plan.steps[-1].output).storage == "output"


def _assert_no_live_overlap(plan):
    arena = [b for b in plan.buffers if b.storage == "arena"]
    for i, a in enumerate(arena):
        assert 0 <= a.offset and a.offset + a.nbytes <= plan.arena_bytes
        for b in arena[i + 1 :]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.nbytes <= b.offset or b.offset + b.nbytes <= a.offset


def test_plan_in_place_alias_and_no_overlap(sink):
    b, outs = sink
    for out in outs.values():
        for fuse in (True, False):
            plan = plan_c(b.quantized(out), fuse=fuse)
            _assert_no_live_overlap(plan)
            assert plan.lower_bound_bytes <= plan.arena_bytes
    plan = plan_c(b.quantized(outs["softmax"]))
    by_kind = {s.kind: s for s in plan.steps}
    # tanh (a lookup) writes over the pool output it reads, which nobody reads later
    tanh = by_kind["lookup"]
    assert plan.tensor_buffer[tanh.output] == plan.tensor_buffer[tanh.inputs[0]]
    # the reshape before the FC is the transpose output under a second name
    fc = by_kind["fc"]
    assert plan.tensor_buffer[fc.inputs[0]] == plan.tensor_buffer[by_kind["transpose"].output]
    # the softmax works in place in the caller's output buffer: the FC writes there
    assert plan.buffer_of(fc.output).storage == "output"
    assert plan.tensor_buffer[fc.output] == plan.tensor_buffer[by_kind["softmax"].output]


def test_reshape_only_model_copies_input_to_output():
    b = GraphBuilder((1, 4, 4, 2))
    g = b.quantized(b.flatten("x"))
    plan = plan_c(g)
    assert [s.kind for s in plan.steps] == ["copy"] and plan.arena_bytes == 0


# ------------------------------------------------------------------ host C, byte for byte


def test_lenet_host_c_1000_images_byte_identical_with_sanitizers(lenet, example_data):
    _need_cc()
    rep = verify_c(lenet, "host-c", example_data["x"], sanitize=True)
    assert rep["samples"] == 1000 and rep["elements"] == 10_000
    assert rep["mismatches"] == 0, rep.get("first_mismatch")
    assert rep["sanitizers"]
    # the arena export reports is exactly the memory the code touches, nothing beyond
    assert rep["arena_touched_bytes"] == rep["arena_bytes"] == 1576
    assert rep["arena_guard_intact"]


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("which", ["dwconv_maxpool", "maxpool", "transpose", "softmax"])
def test_every_kernel_byte_identical_both_roundings(sink, which, rounding):
    _need_cc()
    b, outs = sink
    g = b.quantized(outs[which])
    x = _inputs(b.shape("x"))
    for fuse in (True, False) if which in ("dwconv_maxpool", "maxpool") else (True,):
        rep = verify_c(Model(g, which, rounding=rounding), "host-c", x, sanitize=True, fuse=fuse)
        assert rep["mismatches"] == 0, (fuse, rep.get("first_mismatch"))
        assert rep["arena_touched_bytes"] == rep["arena_bytes"] and rep["arena_guard_intact"]


def _build_and_run(tmp_path, graph, rounding, x, patch_arena=None):
    """Export + host build + run by hand; returns (outputs, harness result)."""
    src, build = tmp_path / "src", tmp_path / "build"
    rep = export_c(graph, src, get_profile("generic-c"), rounding, measure=False,
                   compare_tflm=False)  # fmt: skip
    if patch_arena is not None:
        h = (src / "model.h").read_text()
        old = f"#define EDGECONV_ARENA_BYTES {rep['arena_bytes']}"
        assert old in h
        (src / "model.h").write_text(h.replace(old, f"#define EDGECONV_ARENA_BYTES {patch_arena}"))
    exe = c_build.build_host(src, build)
    (build / "in.bin").write_bytes(np.ascontiguousarray(x).tobytes())
    res = c_build.run_host(exe, build / "in.bin", build / "out.bin")
    return np.frombuffer((build / "out.bin").read_bytes(), np.int8), res, rep


def test_guard_check_catches_an_arena_reported_too_small(tmp_path, lenet, example_data):
    """The guard-byte test is not vacuous: claim 16 bytes less arena than the plan uses
    and the harness sees the model write past it."""
    _need_cc()
    x = lenet.prepare_input(example_data["x"][:4])
    rep = plan_c(lenet.graph)
    _, res, _ = _build_and_run(tmp_path, lenet.graph, "double", x, rep.arena_bytes - 16)
    assert res["guard_ok"] == 0 and res["touched"] == rep.arena_bytes


def test_rounding_mode_reaches_the_c_code(tmp_path, sink):
    """C built for double rounding disagrees with our single-rounding kernels somewhere
    (and agrees with double): the comparison would notice a wrong mode."""
    _need_cc()
    b, outs = sink
    g = b.quantized(outs["transpose"])
    x = Model(g, "t").prepare_input(_inputs(b.shape("x"), n=200))
    got, res, _ = _build_and_run(tmp_path, g, "double", x)
    got = got.reshape(len(x), -1)
    double = Model(g, "t", rounding="double").run(x).reshape(len(x), -1)
    single = Model(g, "t", rounding="single").run(x).reshape(len(x), -1)
    assert np.array_equal(got, double)
    assert (got != single).sum() > 0
    assert res["n"] == 200


@pytest.mark.parametrize("case", case_model_params())
def test_shared_case_host_c_byte_identical(case, int8_case):
    _need_cc()
    model, x = int8_case(case)
    rep = verify_c(model, "host-c", x, sanitize=True)
    assert rep["mismatches"] == 0, rep.get("first_mismatch")
    assert rep["samples"] == 1000
    assert rep["arena_touched_bytes"] == rep["arena_bytes"] and rep["arena_guard_intact"]


# ------------------------------------------------------------------ budgets and errors


def _big_activation_graph() -> Graph:
    b = GraphBuilder((1, 64, 64, 8))
    return b.quantized(b.conv("x", 16, (3, 3), pads=(1, 1, 1, 1)), n_calib=8)


def _big_weights_graph() -> Graph:
    b = GraphBuilder((1, 600))
    return b.quantized(b.fc("x", 600), n_calib=8)


def test_budget_errors_state_the_numbers(tmp_path):
    m0 = get_profile("cortex-m0plus")
    with pytest.raises(EdgeconvError) as e:
        export_c(_big_activation_graph(), tmp_path / "a", m0, measure=False, compare_tflm=False)
    msg = str(e.value)
    assert "does not fit target cortex-m0plus" in msg
    # 64x64x8 input + 64x64x16 output, no arena needed between them
    assert "RAM 98,304 B (arena 0 + input 32,768 + output 65,536) > SRAM budget 32,768 B" in msg
    assert not (tmp_path / "a").exists()
    with pytest.raises(EdgeconvError, match=r"flash \d{3},\d{3} B .* > flash budget 262,144 B"):
        export_c(_big_weights_graph(), tmp_path / "b", m0, measure=False, compare_tflm=False)
    # the same models fit a bigger part
    rep = export_c(_big_weights_graph(), tmp_path / "c", get_profile("cortex-m7"),
                   measure=False, compare_tflm=False)  # fmt: skip
    assert rep["fits"] and rep["const_bytes"] > 360_000


def test_unsupported_op_is_a_clear_error(tmp_path, capsys):
    b = GraphBuilder((1, 10))
    g = b.quantized(b.op("softmax", [b.fc("x", 5)], (1, 5), beta=1.0, log=True))
    with pytest.raises(EdgeconvError, match="log-softmax has no C kernel"):
        plan_c(g)
    # inspect still prints the model and says why there is no C export
    edgeconv.save(g, tmp_path / "ls.edgeconv")
    assert main(["inspect", str(tmp_path / "ls.edgeconv"), "--target", "cortex-m4"]) == 0
    assert "C export for cortex-m4: not possible: " in capsys.readouterr().out


def test_toolchain_missing_names_the_debian_packages(monkeypatch, lenet):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(c_build.ToolchainMissing) as e:
        c_build.arm_tools()
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi" in str(e.value)
    with pytest.raises(c_build.ToolchainMissing, match="apt-get install qemu-system-arm"):
        c_build.qemu()
    with pytest.raises(EdgeconvError, match="gcc-arm-none-eabi"):
        verify_c(lenet, "cortex-m4", emulate=True)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(c_build.ToolchainMissing, match="apt-get install gcc"):
        c_build.host_cc()


def test_mcu_verify_needs_emulate(lenet):
    with pytest.raises(EdgeconvError, match="add --emulate"):
        verify_c(lenet, "cortex-m4")


# ------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory, lenet) -> Path:
    path = tmp_path_factory.mktemp("lenet") / "lenet.int8.edgeconv"
    edgeconv.save(lenet.graph, path)
    return path


def test_cli_export_generic_c_writes_sources(tmp_path, lenet_file, capsys):
    out = tmp_path / "c"
    assert main(["export", str(lenet_file), "--target", "generic-c", "-o", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["arena_bytes"] == 1576 and rep["ram_bytes"] == 1576 + 784 + 10
    names = {p.name for p in out.iterdir()}
    assert {"model.h", "model.c", "edgeconv_config.h", "edgeconv_rt.h", "ec_conv.c"} <= names
    assert "ec_softmax.c" not in names  # only the kernels this model needs
    h = (out / "model.h").read_text()
    assert "#define EDGECONV_ARENA_BYTES 1576" in h and "#define EDGECONV_INPUT_BYTES 784" in h
    assert "static const int8_t l2_weights[48000]" in (out / "model.c").read_text()


def test_cli_inspect_target_reports_arena_flash_and_layers(lenet_file, capsys):
    assert main(["inspect", str(lenet_file), "--target", "cortex-m4"]) == 0
    text = capsys.readouterr().out
    assert "arena 1,576 B" in text and "flash " in text and "-> fits" in text
    assert "conv_maxpool" in text
    assert main(["inspect", str(lenet_file), "--target", "cortex-m4", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)["c_export"]
    assert obj["arena_bytes"] == 1576 and obj["fits"]
    assert [r["arena_live_bytes"] for r in obj["layers"]] == [1176, 1576, 520, 204, 84]


def test_cli_inspect_and_export_refuse_a_model_that_does_not_fit(tmp_path, capsys):
    path = tmp_path / "big.edgeconv"
    edgeconv.save(_big_activation_graph(), path)
    assert main(["inspect", str(path), "--target", "cortex-m0plus"]) == 2
    cap = capsys.readouterr()
    assert "DOES NOT FIT" in cap.out
    assert "edgeconv: error: model does not fit target cortex-m0plus: RAM 98,304 B" in cap.err
    assert main(["export", str(path), "--target", "cortex-m0plus", "-o", str(tmp_path / "o")]) == 2
    assert "SRAM budget 32,768 B" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_verify_host_c(lenet_file, capsys):
    _need_cc()
    data = EXAMPLES / "mnist_test_1k.npz"
    argv = ["verify", str(lenet_file), "--target", "host-c", "--data", str(data), "--limit",
            "100", "--json"]  # fmt: skip
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["mismatches"] == 0 and rep["elements"] == 1000 and rep["arena_bytes"] == 1576


# ------------------------------------------------------------------ TFLite Micro's arena


def _tflm(graph, label):
    from edgeconv.targets.tflm_arena import tflm_arena

    t = tflm_arena(graph)
    if t["arena_bytes"] is None:
        pytest.skip(f"TFLM arena not measured: {t['reason']}")
    plan = plan_c(graph)
    ram = plan.arena_bytes + plan.input_bytes + plan.output_bytes
    print(
        f"\n{label}: arena {plan.arena_bytes} B (lower bound {plan.lower_bound_bytes}, without "
        f"fusion {plan_c(graph, fuse=False).arena_bytes}), RAM with input/output {ram} B; "
        f"TFLM needs {t['min_arena_size']} B (recorded {t['head_bytes']} + {t['tail_bytes']}): "
        f"{100 * ram / t['min_arena_size']:.1f} %"
    )
    return t


def test_lenet_arena_is_at_most_half_of_tflm(lenet):
    t = _tflm(lenet.graph, "lenet5.onnx")
    plan = plan_c(lenet.graph)
    ram = plan.arena_bytes + plan.input_bytes + plan.output_bytes
    # TFLM keeps input and output inside its arena; ours are the caller's: compare both
    assert ram <= 0.5 * t["min_arena_size"]
    # even against TFLM's activation planning alone (no persistent structs)
    assert ram <= t["head_bytes"]
    rep = inspect_c(lenet.graph, get_profile("cortex-m4"))
    assert "TFLite Micro needs a" in rep["text"] and rep["tflm"]["arena_bytes"] == t["arena_bytes"]


@pytest.mark.parametrize("case", case_model_params())
def test_shared_case_arena_is_at_most_half_of_tflm(case, int8_case):
    model, _ = int8_case(case)
    t = _tflm(model.graph, case.name)
    plan = plan_c(model.graph)
    assert plan.arena_bytes + plan.input_bytes + plan.output_bytes <= 0.5 * t["min_arena_size"]


@pytest.mark.parametrize("mode", ["double-up", "fp32", "fp64", "tflite-opt", "xnnpack"])
def test_interpreter_only_rounding_modes_are_refused(lenet, mode):
    """The C runtime has double and single rounding only; emitting one of those for another
    requested mode would silently break the byte-exactness promise."""
    with pytest.raises(EdgeconvError, match="cannot be exported to C"):
        plan_c(lenet.graph, mode)
