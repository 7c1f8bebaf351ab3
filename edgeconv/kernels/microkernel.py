"""The int8 dot-product microkernel of the compiled engine, written as LLVM IR.

Numba's auto-vectoriser turns ``acc += int32(a[i]) * int32(b[i])`` into 128-bit
``pmaddwd`` at best, one horizontal reduction per output value, and it never keeps a
tile of accumulators in registers across the reduction loop. That is the part of a
convolution that decides speed, so it is emitted here directly as LLVM IR through a Numba
``@intrinsic``: a register tile of ``mr`` output pixels x 16 output channels, reduced over
``ngroups`` groups of ``GS`` input bytes.

Two instruction sets:

- ``vnni512`` (x86-64 with AVX-512 VNNI): activations are stored as uint8 (int8 + 128),
  one ``vpdpbusd`` multiplies 4 uint8 activations by 4 int8 weights for 16 output channels
  and adds them to the 16 int32 accumulators (64 multiply-adds per instruction). The +128
  is folded into the bias at load time, like the input zero point.
- ``generic`` (any LLVM target: AArch64 NEON, x86 without VNNI): activations stay int8,
  one group is one input byte times a 16-lane int8 weight vector, written as portable
  vector IR (``sext``, ``mul``, ``add``) that LLVM lowers to ``smlal``/``smlal2`` on
  AArch64 and to ``vpmovsxbd``/``vpmulld``/``vpaddd`` on x86.

Every operation wraps modulo 2^32 like the C int32 accumulator, so the result equals
TFLM's accumulator bit for bit (the zero-point fold holds modulo 2^32 too).

Data layout, per block of 16 output channels: ``w[w_off + t*16*GS + lane*GS + j]`` is the
weight that multiplies byte ``j`` of group ``t`` for output channel ``lane``; group ``t``
of pixel ``m`` starts at ``x[pix[pix_off + m] + tab[tab_off + t]]``. Padding bytes of a
group carry weight 0, so whatever they read contributes 0; the planner guarantees every
byte read lies inside the arrays.
"""

from __future__ import annotations

import functools
import os

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

ISAS = ("vnni512", "generic")
GROUP_BYTES = {"vnni512": 4, "generic": 1}
LANES = 16

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_V16 = ir.VectorType(_I32, LANES)


def host_isa() -> str:
    """The microkernel flavour for this process: ``EDGECONV_ISA`` if set, else what the CPU
    Numba compiles for supports."""
    wanted = os.environ.get("EDGECONV_ISA", "").strip().lower()
    if wanted:
        if wanted not in ISAS:
            from ..errors import EdgeconvError

            raise EdgeconvError(f"EDGECONV_ISA={wanted!r}: use one of {', '.join(ISAS)}")
        return wanted
    return _detected_isa()


@functools.lru_cache(maxsize=1)
def _detected_isa() -> str:
    import platform

    from numba.core import config

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "generic"
    if config.CPU_NAME:  # an explicit (e.g. portable) target: only what it names
        feats = config.CPU_FEATURES or ""
        return "vnni512" if "+avx512vnni" in feats and "+avx512bw" in feats else "generic"
    import llvmlite.binding as ll

    try:
        feats = ll.get_host_cpu_features()
    except RuntimeError:
        return "generic"
    need = ("avx512f", "avx512bw", "avx512vnni")
    return "vnni512" if all(feats.get(f, False) for f in need) else "generic"


def _array_ok(aty, dtype) -> bool:
    return isinstance(aty, types.Array) and aty.ndim == 1 and aty.layout == "C" and (
        aty.dtype == dtype
    )


POOL_NONE, POOL_MAX_ACC, POOL_MAX_OUT = 0, 1, 2


@functools.cache
def tile(isa: str, mr: int, pool: int, mode: int, nstore: int, pair: bool = False,
         offsets: tuple[int, ...] | None = None):
    """The intrinsic ``tile(dst, d_off, d_step, x, pix, pix_off, w, w_off, p32, b_off, m_off,
    s_off, tab, tab_off, ngroups, out_zp, lo, hi, b8)``.

    Accumulates ``mr`` pixels x 16 channels from ``p32[b_off:b_off+16]`` (the folded bias),
    requantizes each lane with ``p32[m_off+lane]``/``p32[s_off+lane]`` in rounding ``mode``
    (0 double, 1 single, 2 double-up), adds ``out_zp`` (int32 wrap), clamps to [lo, hi] and
    stores the first ``nstore`` lanes as int8 + ``b8`` at ``dst[d_off + m*d_step]``.
    ``pool`` = POOL_MAX_ACC stores one output, from the lane-wise maximum of the
    accumulators (exact only where requantization is non-decreasing: the planner checks);
    POOL_MAX_OUT stores the lane-wise maximum of the requantized values.

    ``pair`` (layers with at most 8 output channels): two pixels share one 16-lane vector,
    pixel 2j in lanes 0-7 and pixel 2j+1 in lanes 8-15, so half the multiply-adds do the
    same work; weights, bias, multipliers and shifts then hold channels 0-7 twice.

    ``offsets`` (the group offsets ``tab[tab_off:tab_off+ngroups]`` as constants): the
    reduction becomes straight-line code with constant addresses; ``tab`` and ``ngroups``
    are then not read.
    """
    if isa not in ISAS:
        raise ValueError(f"unknown isa {isa!r}")
    if not 1 <= mr <= 16 or not 1 <= nstore <= LANES or mode not in (0, 1, 2):
        raise ValueError(f"bad tile parameters mr={mr} mode={mode} nstore={nstore}")
    if pair and (mr % 2 or nstore > LANES // 2):
        raise ValueError(f"pair tiles need an even mr and nstore <= 8, got {mr}, {nstore}")
    if pool not in (POOL_NONE, POOL_MAX_ACC, POOL_MAX_OUT):
        raise ValueError(f"bad pool={pool}")
    act_dtype = types.uint8 if isa == "vnni512" else types.int8

    @intrinsic
    def _tile(typingctx, dst, d_off, d_step, x, pix, pix_off, w, w_off, p32, b_off, m_off,
              s_off, tab, tab_off, ng, out_zp, lo, hi, b8):
        args = (dst, d_off, d_step, x, pix, pix_off, w, w_off, p32, b_off, m_off, s_off, tab,
                tab_off, ng, out_zp, lo, hi, b8)
        if not (_array_ok(dst, types.uint8) or _array_ok(dst, types.int8)):
            return None
        arrays = ((x, act_dtype), (pix, types.int64), (w, types.int8), (p32, types.int32))
        if not all(_array_ok(a, d) for a, d in arrays + ((tab, types.int32),)):
            return None
        if not all(isinstance(a, types.Integer) for a in args if not isinstance(a, types.Array)):
            return None

        def codegen(context, builder, signature, values):
            return _emit_tile(context, builder, signature, values, isa, mr, pool, mode, nstore,
                              pair, offsets)

        return types.void(*args), codegen

    _tile.__name__ = f"tile_{isa}_{mr}_p{pool}_m{mode}_n{nstore}{'_pair' if pair else ''}"
    if offsets is not None:
        _tile.__name__ += f"_static{len(offsets)}"
    return _tile


def _emit_tile(context, builder, signature, values, isa, mr, pool, mode, nstore, pair=False,
               offsets=None):
    at = signature.args

    def ptr(i, elem):
        data = context.make_array(at[i])(context, builder, values[i]).data
        return builder.bitcast(data, elem.as_pointer())

    def i64(i):
        return context.cast(builder, values[i], at[i], types.int64)

    def vec_at(base, off, vty):
        return builder.load(builder.bitcast(builder.gep(base, [off]), vty.as_pointer()), align=1)

    dst_p, x_p, pix_p, w_p = ptr(0, _I8), ptr(3, _I8), ptr(4, _I64), ptr(6, _I8)
    p32_p, tab_p = ptr(8, _I32), ptr(12, _I32)
    d_off, d_step, pix_o, w_o = i64(1), i64(2), i64(5), i64(7)
    b_o, m_o, s_o, tab_o, ngroups = i64(9), i64(10), i64(11), i64(13), i64(14)
    zp, lo, hi, b8 = (builder.trunc(i64(i), _I32) for i in (15, 16, 17, 18))

    gs = GROUP_BYTES[isa]
    acc0 = vec_at(p32_p, b_o, _V16)
    bases = [builder.load(builder.gep(pix_p, [builder.add(pix_o, _I64(m))])) for m in range(mr)]
    if isa == "vnni512":
        vpdpbusd = _get_fn(builder.module, "llvm.x86.avx512.vpdpbusd.512", _V16, [_V16] * 3)

    nacc = mr // 2 if pair else mr  # accumulator vectors

    def x_group(m, g_off):
        at_x = builder.gep(x_p, [builder.add(bases[m], g_off)])
        if isa == "vnni512":
            return builder.load(builder.bitcast(at_x, _I32.as_pointer()), align=1)
        return builder.sext(builder.load(at_x), _I32)

    def group(t, g_off, accs):
        """One group of GS input bytes for every pixel: the 16-lane multiply-adds."""
        w_at = builder.add(w_o, builder.mul(t, _I64(LANES * gs)))
        if isa == "vnni512":
            wv = vec_at(w_p, w_at, _V16)
        else:
            wv = builder.sext(vec_at(w_p, w_at, ir.VectorType(_I8, LANES)), _V16)
        new = []
        for m in range(nacc):
            if pair:  # lanes 0-7: pixel 2m, lanes 8-15: pixel 2m+1
                a = _splat(builder, x_group(2 * m, g_off), _V16)
                b = _splat(builder, x_group(2 * m + 1, g_off), _V16)
                mask = ir.Constant(_V16, [0] * (LANES // 2) + [LANES] * (LANES // 2))
                splat = builder.shuffle_vector(a, b, mask)
            else:
                splat = _splat(builder, x_group(m, g_off), _V16)
            if isa == "vnni512":
                new.append(builder.call(vpdpbusd, [accs[m], splat, wv]))
            else:
                new.append(builder.add(accs[m], builder.mul(splat, wv)))
        return new

    if offsets is not None:  # straight-line code, constant addresses
        finals = [acc0] * nacc
        for t, off in enumerate(offsets):
            finals = group(_I64(t), _I64(off), finals)
    else:
        entry = builder.basic_block
        loop = builder.append_basic_block("mk.loop")
        done = builder.append_basic_block("mk.done")
        builder.cbranch(builder.icmp_signed(">", ngroups, _I64(0)), loop, done)
        builder.position_at_end(loop)
        t = builder.phi(_I64)
        accs = [builder.phi(_V16) for _ in range(nacc)]
        t.add_incoming(_I64(0), entry)
        for a in accs:
            a.add_incoming(acc0, entry)
        g_off = builder.sext(builder.load(builder.gep(tab_p, [builder.add(tab_o, t)])), _I64)
        new = group(t, g_off, accs)
        t_next = builder.add(t, _I64(1))
        body_end = builder.basic_block
        t.add_incoming(t_next, body_end)
        for a, n in zip(accs, new, strict=True):
            a.add_incoming(n, body_end)
        builder.cbranch(builder.icmp_signed("<", t_next, ngroups), loop, done)
        builder.position_at_end(done)
        finals = [builder.phi(_V16) for _ in range(nacc)]
        for f, n in zip(finals, new, strict=True):
            f.add_incoming(acc0, entry)
            f.add_incoming(n, body_end)

    mult = vec_at(p32_p, m_o, _V16)
    shift = vec_at(p32_p, s_o, _V16)
    half = LANES // 2

    def fold_pair(v):  # lane-wise max of the two pixels of a pair vector
        swap = ir.Constant(_V16, list(range(half, LANES)) + list(range(half)))
        return _vmax(builder, [v, builder.shuffle_vector(v, v, swap)])

    if pool == POOL_MAX_ACC:
        finals = [_vmax(builder, finals)]
        if pair:
            finals = [fold_pair(finals[0])]
    outs = [_requant(builder, f, mult, shift, mode, _splat(builder, zp, _V16)) for f in finals]
    if pool == POOL_MAX_OUT:
        outs = [_vmax(builder, outs)]
        if pair:
            outs = [fold_pair(outs[0])]
    lo_v, hi_v, b8_v = (_splat(builder, v, _V16) for v in (lo, hi, b8))
    store_ty = ir.VectorType(_I8, nstore)
    stores = []  # (vector, first lane, pixel index)
    for m, v in enumerate(outs):
        v = builder.select(builder.icmp_signed("<", v, lo_v), lo_v, v)
        v = builder.select(builder.icmp_signed(">", v, hi_v), hi_v, v)
        v = builder.trunc(builder.add(v, b8_v), ir.VectorType(_I8, LANES))
        if pair and pool == POOL_NONE:
            stores += [(v, 0, 2 * m), (v, half, 2 * m + 1)]
        else:
            stores.append((v, 0, m))
    for v, first, m in stores:
        if nstore < LANES:
            lanes = ir.Constant(ir.VectorType(_I32, nstore), list(range(first, first + nstore)))
            v = builder.shuffle_vector(v, v, lanes)
        at_d = builder.add(d_off, builder.mul(d_step, _I64(m)))
        builder.store(v, builder.bitcast(builder.gep(dst_p, [at_d]), store_ty.as_pointer()),
                      align=1)
    return context.get_dummy_value()


def _splat(builder, scalar, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, _I32(0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _vmax(builder, vs):
    best = vs[0]
    for v in vs[1:]:
        best = builder.select(builder.icmp_signed(">", v, best), v, best)
    return best


def _requant(builder, acc, mult, shift, mode, zp):
    """MultiplyByQuantizedMultiplier + output zero point on 16 int32 lanes (wrapping like
    the C int32), the vector twin of ``compiled._rq_int``."""
    v64 = ir.VectorType(_I64, LANES)

    def c32(v):
        return ir.Constant(_V16, [v] * LANES)

    def c64(v):
        return ir.Constant(v64, [v] * LANES)

    zero = c32(0)
    if mode == 1:  # single rounding: (acc*q + 2^(30-shift)) >> (31-shift), cast to int32
        total = builder.sext(builder.sub(c32(31), shift), v64)
        prod = builder.mul(builder.sext(acc, v64), builder.sext(mult, v64))
        nudge = builder.shl(c64(1), builder.sub(total, c64(1)))
        r = builder.trunc(builder.ashr(builder.add(prod, nudge), total), _V16)
        return builder.add(r, zp)
    neg = builder.icmp_signed("<", shift, zero)
    left = builder.select(neg, zero, shift)
    right = builder.select(neg, builder.sub(zero, shift), zero)
    a = builder.shl(acc, left)  # int32 wrap, as `x * (1 << left)` in C
    prod = builder.mul(builder.sext(a, v64), builder.sext(mult, v64))
    high = builder.ashr(builder.add(prod, c64(1 << 30)), c64(31))
    high = builder.select(builder.icmp_signed(">", high, c64(2**31 - 1)), c64(2**31 - 1), high)
    if mode == 2:  # rounding shift, ties toward +inf (in int64: high + half may pass int32)
        right64 = builder.sext(right, v64)
        half = builder.ashr(builder.shl(c64(1), right64), c64(1))
        r = builder.trunc(builder.ashr(builder.add(high, half), right64), _V16)
        return builder.add(r, zp)
    high = builder.trunc(high, _V16)
    mask = builder.sub(builder.shl(c32(1), right), c32(1))
    remainder = builder.and_(high, mask)
    threshold = builder.add(builder.lshr(mask, c32(1)),
                            builder.zext(builder.icmp_signed("<", high, zero), _V16))
    bump = builder.zext(builder.icmp_signed(">", remainder, threshold), _V16)
    return builder.add(builder.add(builder.ashr(high, right), bump), zp)


def _get_fn(module, name, ret, argtys):
    fnty = ir.FunctionType(ret, argtys)
    try:
        fn = module.get_global(name)
    except KeyError:
        fn = ir.Function(module, fnty, name=name)
    return fn
