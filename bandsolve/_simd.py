"""Explicit SIMD vectors for Numba CPU kernels.

Numba's LLVM pipeline runs the loop vectoriser but not the SLP vectoriser, and
short loops over batch "lanes" get fully unrolled into scalar code. The tuned
kernels therefore compute on an explicit vector type: ``Vec`` is an LLVM
``<LANES x float>`` value (one SIMD register, or two halves of one on AVX2)
with a handful of intrinsics:

    vload(a, i)          a[i : i+LANES] as a vector (a 1-D contiguous array)
    vstore(a, i, v)      a[i : i+LANES] = v
    vstore_nt(a, i, v)   the same, bypassing the caches (a[i] must be vector-aligned:
                         see ``vaddr``)
    vfnma(acc, x, y)     acc - x * y   (fused multiply-add where the CPU has one)
    vfma(acc, x, y)      acc + x * y
    vmul(x, y), vsqrt(x), vrecip(x) = 1 / x, vlane(v, j) = v[j]
    vflush(x)            x with subnormal lanes set to 0; vabsmax(m, x) = max(m, |x|)

Lanes hold independent batch items, so no operation ever mixes lanes and the
results are bitwise those of the scalar code (up to FMA contraction). The
element type follows the array (float32 or float64); LANES = 8.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

LANES = 8
_FLAGS = ("contract",)


class Vec(types.Type):
    """A vector of ``LANES`` values of a float dtype (Numba type)."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vec{LANES}({dtype})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, LANES))


def _vec_ir(context, dtype):
    return ir.VectorType(context.get_value_type(dtype), LANES)


def _pointer(context, builder, arrty, arr, index, indexty):
    ary = context.make_array(arrty)(context, builder, arr)
    index = context.cast(builder, index, indexty, types.intp)
    return builder.gep(ary.data, [index])


@intrinsic
def vload(typingctx, arr, index):
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, _vec_ir(context, arr.dtype).as_pointer())
        return builder.load(vptr, align=context.get_abi_sizeof(context.get_value_type(arr.dtype)))

    return vt(arr, index), codegen


@intrinsic
def vstore(typingctx, arr, index, vec):
    if not (isinstance(arr, types.Array) and isinstance(vec, Vec)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vptr = builder.bitcast(ptr, _vec_ir(context, arr.dtype).as_pointer())
        builder.store(args[2], vptr, align=context.get_abi_sizeof(context.get_value_type(arr.dtype)))
        return context.get_dummy_value()

    return types.none(arr, index, vec), codegen


@intrinsic
def vstore_nt(typingctx, arr, index, vec):
    """a[i : i+LANES] = v with a non-temporal (streaming) store.

    The line is written to memory without being read into the caches first,
    which saves a third of the traffic of an array written once and read back
    much later. The address must be aligned to the vector size (LANES times
    the item size): the instruction faults otherwise.
    """
    if not (isinstance(arr, types.Array) and isinstance(vec, Vec)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        vty = _vec_ir(context, arr.dtype)
        vptr = builder.bitcast(ptr, vty.as_pointer())
        size = LANES * context.get_abi_sizeof(context.get_value_type(arr.dtype))
        store = builder.store(args[2], vptr, align=size)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.none(arr, index, vec), codegen


@intrinsic
def vaddr(typingctx, arr):
    """The address of the first element of ``arr`` (an integer)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, context.get_value_type(types.intp))

    return types.intp(arr), codegen


@intrinsic
def vfnma(typingctx, acc, x, y):
    """acc - x * y."""
    if not isinstance(acc, Vec):
        return None

    def codegen(context, builder, sig, args):
        prod = builder.fmul(args[1], args[2], flags=_FLAGS)
        return builder.fsub(args[0], prod, flags=_FLAGS)

    return acc(acc, x, y), codegen


@intrinsic
def vfma(typingctx, acc, x, y):
    """acc + x * y."""
    if not isinstance(acc, Vec):
        return None

    def codegen(context, builder, sig, args):
        prod = builder.fmul(args[1], args[2], flags=_FLAGS)
        return builder.fadd(args[0], prod, flags=_FLAGS)

    return acc(acc, x, y), codegen


@intrinsic
def vadd(typingctx, x, y):
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=_FLAGS)

    return x(x, y), codegen


@intrinsic
def vmul(typingctx, x, y):
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=_FLAGS)

    return x(x, y), codegen


@intrinsic
def vrecip(typingctx, x):
    """1 / x."""
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        one = ir.Constant(vty, [ir.Constant(vty.element, 1.0)] * LANES)
        return builder.fdiv(one, args[0])

    return x(x), codegen


@intrinsic
def vsqrt(typingctx, x):
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(args[0].type, [args[0].type]),
            f"llvm.sqrt.v{LANES}{'f64' if x.dtype == types.float64 else 'f32'}",
        )
        return builder.call(fn, [args[0]])

    return x(x), codegen


def _fabs(builder, v, dtype):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v.type, [v.type]),
        f"llvm.fabs.v{LANES}{'f64' if dtype == types.float64 else 'f32'}",
    )
    return builder.call(fn, [v])


@intrinsic
def vflush(typingctx, x):
    """x with every lane below the smallest normal number in magnitude set to 0.

    What flush-to-zero does in hardware: a recursion whose values decay
    geometrically would otherwise run into subnormals, which cost on the order
    of a hundred cycles per operation on x86.
    """
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        tiny = float(np.finfo(np.float64 if x.dtype == types.float64 else np.float32).tiny)
        lim = ir.Constant(vty, [ir.Constant(vty.element, tiny)] * LANES)
        small = builder.fcmp_ordered("<", _fabs(builder, args[0], x.dtype), lim)
        return builder.select(small, ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * LANES),
                              args[0])

    return x(x), codegen


@intrinsic
def vabsmax(typingctx, m, x):
    """max(m, |x|) per lane (NaN in x propagates)."""
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        ax = _fabs(builder, args[1], x.dtype)
        keep = builder.fcmp_ordered(">=", args[0], ax)
        return builder.select(keep, args[0], ax)

    return x(m, x), codegen


@intrinsic
def vany_not_positive(typingctx, x):
    """True when some lane of x is not finite and positive (NaN, <= 0 or +inf)."""
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * LANES)
        inf = ir.Constant(vty, [ir.Constant(vty.element, float("inf"))] * LANES)
        bad = builder.or_(builder.fcmp_unordered("<=", args[0], zero),
                          builder.fcmp_unordered(">=", args[0], inf))
        mask = builder.bitcast(bad, ir.IntType(LANES))
        return builder.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(LANES), 0))

    return types.boolean(x), codegen


@intrinsic
def vlane(typingctx, x, j):
    """The j-th lane of x as a scalar."""
    if not (isinstance(x, Vec) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], args[1])

    return x.dtype(x, j), codegen


@intrinsic
def vsplat(typingctx, value, like):
    """A vector with every lane equal to ``value`` (dtype of the vector ``like``)."""
    if not isinstance(like, Vec):
        return None

    def codegen(context, builder, sig, args):
        scalar = context.cast(builder, args[0], sig.args[0], like.dtype)
        vty = _vec_ir(context, like.dtype)
        vec = ir.Constant(vty, ir.Undefined)
        for j in range(LANES):
            vec = builder.insert_element(vec, scalar, ir.Constant(ir.IntType(32), j))
        return vec

    return like(value, like), codegen


def _shuffle(builder, a, b, mask):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), LANES), mask))


@intrinsic
def vtranspose(typingctx, rows):
    """Transpose a LANES x LANES tile held as a tuple of LANES vectors (rows -> columns)."""
    if not (isinstance(rows, types.UniTuple) and rows.count == LANES and isinstance(rows.dtype, Vec)):
        return None

    def codegen(context, builder, sig, args):
        v = [builder.extract_value(args[0], j) for j in range(LANES)]
        # log2(LANES) butterfly stages; stage with span s pairs rows j and j+s and
        # interleaves blocks of s elements.
        span = 1
        while span < LANES:
            out = list(v)
            for j in range(LANES):
                if j & span:
                    continue
                lo, hi = [], []
                for e in range(LANES):
                    blk, pos = divmod(e, 2 * span)
                    base = blk * 2 * span
                    if pos < span:
                        lo.append(base + pos)
                        hi.append(base + span + pos)
                    else:
                        lo.append(LANES + base + pos - span)
                        hi.append(LANES + base + pos)
                out[j] = _shuffle(builder, v[j], v[j + span], lo)
                out[j + span] = _shuffle(builder, v[j], v[j + span], hi)
            v = out
            span *= 2
        res = cgutils.get_null_value(context.get_value_type(sig.return_type))
        for j in range(LANES):
            res = builder.insert_value(res, v[j], j)
        return res

    return rows(rows), codegen


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to bring the cache line of arr[index] into L2 (no effect on results).

    L2, not L1: the kernels prefetch the band a few block rows ahead, and in
    L1 those lines would evict the block rows being worked on (measured: 5 %
    slower into L1, 10-25 % faster into L2 at B=64, T=1000, k=9).
    """
    if not (isinstance(arr, types.Array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        # rw = 0 (read), locality = 2 (prefetcht1: L2 and outward), cache type = 1 (data)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 2),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, index), codegen
