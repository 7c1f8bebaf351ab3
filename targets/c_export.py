"""`edgeconv export --target <mcu profile>`: the int8 model as plain C99.

Writes into the output folder:

- ``model.h``: the API (``edgeconv_model_run``, ``edgeconv_model_run_arena``) and
  ``#define``s for input/output shapes, quantization and ``EDGECONV_ARENA_BYTES``;
- ``model.c``: weights, biases, multipliers and per-layer parameter structs as
  ``static const`` data (flash), and the layers as straight-line kernel calls whose
  buffer pointers are fixed arena offsets from the memory plan (``c_plan``);
- ``edgeconv_config.h``: the requantization rounding mode chosen at export;
- ``edgeconv_rt.h`` and the ``ec_*.c`` kernel files this model needs (``targets/c/``).

Nothing is written unless the whole export succeeds (including the budget check).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from edgeconv.errors import EdgeconvError
from edgeconv.ir import Graph

from .c_plan import IN, OUT, CPlan, Step, plan_c
from .profiles import TargetProfile

RUNTIME_HEADER = "edgeconv_rt.h"
# kernel step kind -> the runtime source that implements it
KERNEL_FILES = {
    "conv": "ec_conv.c",
    "dwconv": "ec_conv.c",
    "conv_maxpool": "ec_conv.c",
    "dwconv_maxpool": "ec_conv.c",
    "fc": "ec_fc.c",
    "maxpool": "ec_pool.c",
    "avgpool": "ec_pool.c",
    "softmax": "ec_softmax.c",
    "clamp": "ec_eltwise.c",
    "lookup": "ec_eltwise.c",
    "add": "ec_eltwise.c",
    "pad": "ec_eltwise.c",
    "transpose": "ec_eltwise.c",
    "copy": "ec_eltwise.c",
}
ALWAYS = ("ec_eltwise.c",)  # ec_argmax for the application

# Approximate Thumb-2 code bytes per runtime file (arm-none-eabi-gcc 12.2 -Os,
# cortex-m4) and per generated kernel call, for `inspect` where nothing is compiled.
# tests/test_c_export_mcu.py checks the estimate against arm-none-eabi-size.
CODE_ESTIMATE = {
    "ec_conv.c": 900,
    "ec_fc.c": 140,
    "ec_pool.c": 420,
    "ec_softmax.c": 560,
    "ec_eltwise.c": 420,
}
CALL_ESTIMATE = 12
STRUCT_FIELDS = {  # int32 fields (pointers are 4 bytes on 32-bit MCUs)
    "conv": 24,
    "fc": 11,
    "pool": 16,
    "softmax": 5,
    "add": 24,
    "pad": 8,
    "transpose": 13,
}


def runtime_source(name: str) -> str:
    return (resources.files("edgeconv.targets") / "c" / name).read_text()


def _c_array(ctype: str, name: str, arr: np.ndarray) -> str:
    flat = np.asarray(arr).reshape(-1)
    vals = [str(int(v)) for v in flat.tolist()]
    if ctype == "int32_t":  # INT32_MIN has no literal
        vals = ["INT32_MIN" if v == str(-(2**31)) else v for v in vals]
    per_line = 20 if ctype == "int8_t" else 8
    lines = [", ".join(vals[i : i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    {body}\n}};\n"


def _c_struct(ctype: str, name: str, fields: dict) -> str:
    parts = []
    for k, v in fields.items():
        if isinstance(v, (list, tuple)):
            v = "{" + ", ".join(str(int(x)) for x in v) + "}"
        parts.append(f"    .{k} = {v},")
    return f"static const {ctype} {name} = {{\n" + "\n".join(parts) + "\n};\n"


def _comment(text: str) -> str:
    """Model-file text made safe inside a C block comment: no way to close the comment,
    splice a line (backslash) or hide a line ending in a control character."""
    text = "".join(ch if " " <= ch < "\x7f" else "?" for ch in text)
    return text.replace("\\", "/").replace("*/", "* /")


class _Emitter:
    def __init__(self, plan: CPlan):
        self.plan = plan
        self.decls: list[str] = []
        self.calls: list[str] = []

    def ptr(self, tensor: str, write: bool = False) -> str:
        b = self.plan.buffer_of(tensor)
        if b.storage == IN:
            if write:
                raise AssertionError("a step writes the caller's input")
            return "input"
        if b.storage == OUT:
            return "output"
        return f"(a + {b.offset})"

    def consts(self, i: int, s: Step) -> dict[str, str]:
        names = {}
        for key, arr in s.consts.items():
            ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t"}[arr.dtype]
            name = f"l{i}_{key}"
            self.decls.append(_c_array(ctype, name, arr))
            names[key] = name
        return names

    def step(self, i: int, s: Step) -> None:
        b = self.plan.buffer_of(s.output)
        where = "output" if b.storage == OUT else f"arena[{b.offset}:{b.offset + b.nbytes}]"
        ins = ", ".join(
            "input" if self.plan.buffer_of(t).storage == IN else
            "output" if self.plan.buffer_of(t).storage == OUT else
            f"arena[{self.plan.buffer_of(t).offset}:]"
            for t in s.inputs
        )  # fmt: skip
        self.calls.append(f"    /* {i}: {_comment(s.name)} ({s.kind}) {ins} -> {where} */")
        c = self.consts(i, s)
        x = self.ptr(s.inputs[0])
        y = self.ptr(s.output, write=True)
        p = dict(s.params)
        if s.kind in ("conv", "dwconv", "conv_maxpool", "dwconv_maxpool"):
            pool = p.pop("pool", None)
            p.update(
                weights=c["weights"],
                bias=c["bias"],
                kernel_sum=c["kernel_sum"],
                mult=c["mult"],
                shift=c["shift"],
            )
            self.decls.append(_c_struct("ec_conv_t", f"l{i}", p))
            fn = {
                "conv": "ec_conv2d",
                "dwconv": "ec_depthwise_conv2d",
                "conv_maxpool": "ec_conv2d_maxpool",
                "dwconv_maxpool": "ec_depthwise_conv2d_maxpool",
            }[s.kind]
            if pool is not None:
                self.decls.append(_c_struct("ec_pool_t", f"l{i}_pool", pool))
                self.calls.append(f"    {fn}(&l{i}, &l{i}_pool, {x}, {y});")
            else:
                self.calls.append(f"    {fn}(&l{i}, {x}, {y});")
        elif s.kind == "fc":
            p.update(weights=c["weights"], bias=c["bias"], mult=c["mult"], shift=c["shift"])
            self.decls.append(_c_struct("ec_fc_t", f"l{i}", p))
            self.calls.append(f"    ec_fully_connected(&l{i}, {x}, {y});")
        elif s.kind in ("maxpool", "avgpool"):
            self.decls.append(_c_struct("ec_pool_t", f"l{i}", p))
            fn = "ec_max_pool" if s.kind == "maxpool" else "ec_avg_pool"
            self.calls.append(f"    {fn}(&l{i}, {x}, {y});")
        elif s.kind == "softmax":
            self.decls.append(_c_struct("ec_softmax_t", f"l{i}", p))
            self.calls.append(f"    ec_softmax(&l{i}, {x}, {y});")
        elif s.kind == "add":
            self.decls.append(_c_struct("ec_add_t", f"l{i}", p))
            x2 = self.ptr(s.inputs[1])
            self.calls.append(f"    ec_add(&l{i}, {x}, {x2}, {y});")
        elif s.kind == "pad":
            self.decls.append(_c_struct("ec_pad_t", f"l{i}", p))
            self.calls.append(f"    ec_pad(&l{i}, {x}, {y});")
        elif s.kind == "transpose":
            pad = 6 - p["rank"]
            p["out_shape"] = list(p["out_shape"]) + [1] * pad
            p["in_stride"] = list(p["in_stride"]) + [0] * pad
            self.decls.append(_c_struct("ec_transpose_t", f"l{i}", p))
            self.calls.append(f"    ec_transpose(&l{i}, {x}, {y});")
        elif s.kind == "clamp":
            self.calls.append(f"    ec_clamp({x}, {y}, {p['n']}, {p['lo']}, {p['hi']});")
        elif s.kind == "lookup":
            self.calls.append(f"    ec_lookup({x}, {y}, {p['n']}, {c['table']});")
        elif s.kind == "copy":
            self.calls.append(f"    memcpy({y}, {x}, {p['n']});")
        else:  # pragma: no cover - plan_c only makes the kinds above
            raise AssertionError(s.kind)


def _shape_defines(prefix: str, shape: tuple[int, ...], scale: float, zp: int) -> list[str]:
    dims = [1, *[int(d) for d in shape[1:]]]
    out = [f"#define {prefix}_RANK {len(dims)}"]
    out += [f"#define {prefix}_DIM{i} {d}" for i, d in enumerate(dims)]
    out += [
        f"#define {prefix}_BYTES {int(np.prod(dims))}",
        f"#define {prefix}_SCALE {float(np.float32(scale))!r}f",
        f"#define {prefix}_ZERO_POINT ({zp})",
    ]
    return out


def generate(plan: CPlan, *, source: str = "") -> dict[str, str]:
    """All files of the export as {name: text}."""
    from edgeconv import __version__

    g = plan.graph
    em = _Emitter(plan)
    for i, s in enumerate(plan.steps):
        em.step(i, s)
    arena = plan.arena_bytes
    in_t, out_t = g.tensors[plan.input_name], g.tensors[plan.output_name]
    s_in, zp_in = in_t.qparams()
    s_out, zp_out = out_t.qparams()
    head = f"Generated by edgeconv {__version__}{' from ' + _comment(source) if source else ''}."
    model_h = "\n".join(
        [
            f"/* {head} Do not edit.",
            " *",
            " * int8 in, int8 out, no malloc, no floats. The input is the model's input as",
            " * edgeconv sees it (same layout as the source model, batch 1), quantized:",
            " * q = clamp(round(x / EDGECONV_INPUT_SCALE) + EDGECONV_INPUT_ZERO_POINT).",
            " * The output is raw int8: real = (q - EDGECONV_OUTPUT_ZERO_POINT) * scale.",
            " * input and output must not overlap each other or the arena. */",
            "#ifndef EDGECONV_MODEL_H",
            "#define EDGECONV_MODEL_H",
            "#include <stdint.h>",
            "",
            *_shape_defines("EDGECONV_INPUT", in_t.shape, s_in, zp_in),
            *_shape_defines("EDGECONV_OUTPUT", out_t.shape, s_out, zp_out),
            "",
            "/* Every activation lives at a fixed offset in one arena of exactly this size. */",
            f"#define EDGECONV_ARENA_BYTES {arena}",
            "#define EDGECONV_ARENA_ALIGN 4",
            f'#define EDGECONV_ROUNDING "{plan.rounding}"',
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "/* One inference with the built-in static arena (not reentrant). */",
            "void edgeconv_model_run(const int8_t *input, int8_t *output);",
            "/* One inference in a caller-provided arena of EDGECONV_ARENA_BYTES bytes,",
            " * aligned to EDGECONV_ARENA_ALIGN. Its contents need no initialisation. */",
            "void edgeconv_model_run_arena(const int8_t *input, int8_t *output, void *arena);",
            "/* Index of the largest output value (first on ties): the class for a classifier. */",
            "int32_t edgeconv_model_argmax(const int8_t *output);",
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "#endif /* EDGECONV_MODEL_H */",
            "",
        ]
    )
    model_c = "\n".join(
        [
            f"/* {head} Do not edit. */",
            '#include "model.h"',
            f'#include "{RUNTIME_HEADER}"',
            "",
            "/* ---- constants: stay in flash ---- */",
            *em.decls,
            "/* ---- the layers, in order; pointers are fixed arena offsets ---- */",
            "void edgeconv_model_run_arena(const int8_t *input, int8_t *output, void *arena)",
            "{",
            "    int8_t *a = (int8_t *)arena;",
            "    (void)a;",
            "    (void)input;",
            *em.calls,
            "}",
            "",
            "int32_t edgeconv_model_argmax(const int8_t *output)",
            "{",
            "    return ec_argmax(output, EDGECONV_OUTPUT_BYTES);",
            "}",
            "",
            "#ifndef EDGECONV_NO_STATIC_ARENA",
            f"static int32_t edgeconv_arena[{max((arena + 3) // 4, 1)}];",
            "void edgeconv_model_run(const int8_t *input, int8_t *output)",
            "{",
            "    edgeconv_model_run_arena(input, output, edgeconv_arena);",
            "}",
            "#endif",
            "",
        ]
    )
    config_h = "\n".join(
        [
            f"/* {head} Do not edit. */",
            "#ifndef EDGECONV_CONFIG_H",
            "#define EDGECONV_CONFIG_H",
            f"/* requantization: {plan.rounding} rounding */",
            f"#define EDGECONV_SINGLE_ROUNDING {1 if plan.rounding == 'single' else 0}",
            "#endif",
            "",
        ]
    )
    files = {"model.h": model_h, "model.c": model_c, "edgeconv_config.h": config_h}
    files[RUNTIME_HEADER] = runtime_source(RUNTIME_HEADER)
    for name in kernel_files(plan):
        files[name] = runtime_source(name)
    return files


def kernel_files(plan: CPlan) -> list[str]:
    return sorted({KERNEL_FILES[s.kind] for s in plan.steps} | set(ALWAYS))


def flash_estimate(plan: CPlan) -> dict:
    """Constants (exact) + code (estimated) for a 32-bit MCU, without compiling."""
    structs = 0
    for s in plan.steps:
        base = {"conv": "conv", "dwconv": "conv", "conv_maxpool": "conv",
                "dwconv_maxpool": "conv", "maxpool": "pool", "avgpool": "pool"}.get(
            s.kind, s.kind)  # fmt: skip
        structs += 4 * STRUCT_FIELDS.get(base, 0)
        if s.kind.endswith("_maxpool"):
            structs += 4 * STRUCT_FIELDS["pool"]
    code = sum(CODE_ESTIMATE[f] for f in kernel_files(plan)) + CALL_ESTIMATE * len(plan.steps)
    const = plan.const_bytes + structs
    return {"const_bytes": const, "code_bytes_estimate": code, "flash_bytes": const + code}


def memory_report(plan: CPlan, profile: TargetProfile | None = None) -> dict:
    """The numbers `export` and `inspect --target` print, and the budget verdict."""
    flash = flash_estimate(plan)
    ram = plan.arena_bytes + plan.input_bytes + plan.output_bytes
    rep = {
        "arena_bytes": plan.arena_bytes,
        "arena_lower_bound_bytes": plan.lower_bound_bytes,
        "plan_strategy": plan.strategy,
        "input_bytes": plan.input_bytes,
        "output_bytes": plan.output_bytes,
        "ram_bytes": ram,
        **flash,
        "rounding": plan.rounding,
        "layers": plan.step_peaks(),
        "buffers": [
            {
                "tensors": b.tensors,
                "bytes": b.nbytes,
                "storage": b.storage,
                "offset": b.offset if b.storage == "arena" else None,
                "live_steps": [b.first, b.last],
            }
            for b in plan.buffers
        ],
    }
    if profile is not None:
        rep["target"] = profile.name
        rep["sram_budget_bytes"] = profile.sram_bytes
        rep["flash_budget_bytes"] = profile.flash_bytes
        rep["fits_sram"] = profile.sram_bytes is None or ram <= profile.sram_bytes
        rep["fits_flash"] = (
            profile.flash_bytes is None or flash["flash_bytes"] <= profile.flash_bytes
        )
        rep["fits"] = rep["fits_sram"] and rep["fits_flash"]
    return rep


def budget_error(rep: dict) -> str | None:
    """One line saying what does not fit, with the numbers; None when it fits."""
    problems = []
    if rep.get("fits_sram") is False:
        problems.append(
            f"RAM {rep['ram_bytes']:,} B (arena {rep['arena_bytes']:,} + input "
            f"{rep['input_bytes']:,} + output {rep['output_bytes']:,}) > SRAM budget "
            f"{rep['sram_budget_bytes']:,} B by {rep['ram_bytes'] - rep['sram_budget_bytes']:,} B"
        )
    if rep.get("fits_flash") is False:
        problems.append(
            f"flash {rep['flash_bytes']:,} B (constants {rep['const_bytes']:,} + code "
            f"~{rep['code_bytes_estimate']:,}) > flash budget {rep['flash_budget_bytes']:,} B "
            f"by {rep['flash_bytes'] - rep['flash_budget_bytes']:,} B"
        )
    if not problems:
        return None
    return f"model does not fit target {rep['target']}: " + "; ".join(problems)


def report_lines(rep: dict) -> list[str]:
    """Human-readable memory report (arena, flash, per-layer peak, budget verdict)."""
    lines = [
        f"arena {rep['arena_bytes']:,} B (lower bound {rep['arena_lower_bound_bytes']:,} B, "
        f"{rep['plan_strategy']}); with the caller's input {rep['input_bytes']:,} B and output "
        f"{rep['output_bytes']:,} B: RAM {rep['ram_bytes']:,} B",
        f"flash {rep['flash_bytes']:,} B = constants {rep['const_bytes']:,} B + code "
        f"~{rep['code_bytes_estimate']:,} B (estimate)",
    ]
    if rep.get("flash_measured"):
        m = rep["flash_measured"]
        lines.append(
            f"flash measured ({m['compiler']}): text {m['text_bytes']:,} B, data "
            f"{m['data_bytes']:,} B, bss {m['bss_bytes']:,} B (bss = the static arena)"
        )
    head = f"{'#':>3} {'kernel':<15} {'output':<16} {'arena live':>10}  layer"
    lines += [head, "-" * len(head)]
    for r in rep["layers"]:
        lines.append(
            f"{r['step']:>3} {r['kernel']:<15} {str(r['output_shape']):<16} "
            f"{r['arena_live_bytes']:>10,}  {r['name']}"
        )
    if "target" in rep:
        sram = rep["sram_budget_bytes"]
        flash = rep["flash_budget_bytes"]
        lines.append(
            f"target {rep['target']}: RAM {rep['ram_bytes']:,} / "
            f"{'unbounded' if sram is None else f'{sram:,}'} B, flash {rep['flash_bytes']:,} / "
            f"{'unbounded' if flash is None else f'{flash:,}'} B -> "
            f"{'fits' if rep['fits'] else 'DOES NOT FIT'}"
        )
    if rep.get("tflm"):
        t = rep["tflm"]
        if t.get("arena_bytes") is not None:
            lines.append(
                f"TFLite Micro needs a {t['min_arena_size']:,} B arena for the same model "
                f"(allocated {t['arena_bytes']:,} B = activations {t['head_bytes']:,} + "
                f"persistent {t['tail_bytes']:,}; {t['host']})"
            )
            lines.append(
                f"edgeconv: arena {rep['arena_bytes']:,} B "
                f"({100 * rep['arena_bytes'] / t['min_arena_size']:.1f} % of TFLM's), "
                f"arena + input + output {rep['ram_bytes']:,} B "
                f"({100 * rep['ram_bytes'] / t['min_arena_size']:.1f} %)"
            )
        else:
            lines.append(f"TFLite Micro arena: not measured ({t['reason']})")
    return lines


def inspect_c(graph: Graph, profile: TargetProfile, *, compare_tflm: bool = True) -> dict:
    """`inspect --target <mcu>`: the memory report without writing or compiling anything;
    "error" holds the budget message when the model does not fit."""
    try:
        plan = plan_c(graph, "double")
    except EdgeconvError as e:  # the rest of `inspect` is still useful
        msg = f"C export for {profile.name}: not possible: {e}"
        return {"unsupported": str(e), "error": None, "text": msg}
    rep = memory_report(plan, profile)
    if compare_tflm:
        from .tflm_arena import tflm_arena

        rep["tflm"] = tflm_arena(graph)
    rep["error"] = budget_error(rep)
    rep["text"] = "\n".join([f"C export for {profile.name}:"] + report_lines(rep))
    return rep


def export_c(
    graph: Graph,
    outdir: str | os.PathLike,
    profile: TargetProfile,
    rounding: str = "double",
    *,
    fuse: bool = True,
    measure: bool = True,
    compare_tflm: bool = True,
    source: str = "",
) -> dict:
    """Plan, check the budget, write the C sources; returns the report (its "text" key is
    the human output). Raises EdgeconvError if the model does not fit `profile`."""
    if profile.kind != "mcu":
        raise EdgeconvError(f"target {profile.name} is not a microcontroller (C export) target")
    plan = plan_c(graph, rounding, fuse=fuse)
    rep = memory_report(plan, profile)
    err = budget_error(rep)
    if err:
        raise EdgeconvError(err)
    files = generate(plan, source=source)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise EdgeconvError(f"{out} exists and is not a folder")
    if not out.parent.is_dir():
        raise EdgeconvError(f"cannot write {out}: folder {out.parent} does not exist")
    if measure:  # compile in a scratch folder first: a measured overflow writes nothing
        import tempfile

        from .c_build import measure_flash

        with tempfile.TemporaryDirectory() as tmp:
            for name, text in files.items():
                (Path(tmp) / name).write_text(text)
            rep["flash_measured"] = measured = measure_flash(Path(tmp), profile)
        budget = profile.flash_bytes
        if measured and budget is not None and measured["flash_bytes"] > budget:
            raise EdgeconvError(
                f"model does not fit target {profile.name}: flash {measured['flash_bytes']:,} B "
                f"(measured: text {measured['text_bytes']:,} + data {measured['data_bytes']:,}) "
                f"> flash budget {budget:,} B by {measured['flash_bytes'] - budget:,} B"
            )
    out.mkdir(exist_ok=True)
    from edgeconv.fileio import atomic_write

    umask = os.umask(0)
    os.umask(umask)
    for name, text in files.items():
        atomic_write(out / name, text.encode())
        os.chmod(out / name, 0o666 & ~umask)
    rep["output"] = str(out)
    rep["files"] = sorted(files)
    if compare_tflm:
        from .tflm_arena import tflm_arena

        rep["tflm"] = tflm_arena(graph)
    lines = [f"wrote {out}/: {', '.join(sorted(files))}"] + report_lines(rep)
    rep["text"] = "\n".join(lines)
    return rep
