"""``chain_rule`` for every pair of dense and structured Jacobians.

The oracle is the lecture's definition, ``np.tensordot`` over the contracted
axes of the dense tensors built by ``fastjac.dense``. For every pair we check
``fastjac.dense.chain_rule`` equals it and ``fastjac.structured.chain_rule``
(densified where it returns a Jacobian) equals it too; results that stay
structured must also contract (vjp/jvp) and sparsify correctly.

Tolerances are relative to ``tensordot(|Dg|, |Df|)``, the quantity summation
rounding is proportional to (see ``conftest.tolerance``).
"""

from math import prod

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import lecture
from fastjac import dense, structured
from fastjac.jacobians import BlockDiagonal, Composed, Diagonal, Jacobian, KronIW, KronOneI, KronXI

LAYOUTS = ("C", "F", "strided", "swapped", "reversed")
DTYPES = (np.float32, np.float64)

dims_st = st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
dtype_st = st.sampled_from(DTYPES)
seed_st = st.integers(0, 2**32 - 1)
layout_st = st.sampled_from(LAYOUTS)
extra_st = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


class Maker:
    """Random inputs for one hypothesis example: seeded, in one layout."""

    def __init__(self, seed, layout, relayout):
        self.rng = np.random.default_rng(seed)
        self.layout, self.relayout = layout, relayout

    def array(self, shape, dtype, scale=1.0):
        return self.relayout((scale * self.rng.standard_normal(shape)).astype(dtype), self.layout)

    def affine(self, N, d, k, dtype):
        return self.array((N, d), dtype), self.array((d, k), dtype), self.array((1, k), dtype)


# Each builder returns (structured J, the dense reference's tensor D for it, and
# S >= |D| entrywise: the magnitude D's own rounding errors are proportional to).
# Every structured type appears, each built by the lecture's D* where one exists.

def build(kind, mk, dtype, N, p, q):
    """A Jacobian of kind ``kind`` from (N, q) to (N, p) (KronXI: (q, p) -> (N, p), KronOneI: (p,))."""
    if kind == "Diagonal":
        assert p == q
        Z = mk.array((N, p), dtype, 3)
        J, D = structured.Dlogit(Z)[0], dense.Dlogit(Z)[0]
    elif kind == "BlockDiagonal" and p == q:
        Z = mk.array((N, p), dtype, 3)
        J, D = structured.Dmatrix_softmax(Z)[0], dense.Dmatrix_softmax(Z)[0]
        # v_i - v_i v_i cancels when v_i is near 1: both sides round it to ~eps * v_i,
        # not to eps * |v_i (1 - v_i)|, so the scale of block row i is v_i
        V = dense.matrix_softmax(Z).astype(np.float64)
        return J, D, np.abs(D) + BlockDiagonal(np.repeat(V[:, :, None], q, axis=2)).to_dense()
    elif kind == "BlockDiagonal":
        J = BlockDiagonal(mk.array((N, p, q), dtype))  # rectangular: no lecture D* for it
        D = J.to_dense()  # checked entry by entry in test_jacobians
    elif kind in ("KronIW", "KronXI", "KronOneI"):
        name = {"KronIW": "DX_affine", "KronXI": "DW_affine", "KronOneI": "Db_affine"}[kind]
        args = mk.affine(N, q, p, dtype)
        J, D = getattr(structured, name)(*args)[0], getattr(dense, name)(*args)[0]
    elif kind == "Composed":
        # logit(X W + b) in X: Diagonal o KronIW, the forward-mode product
        X, W, b = mk.affine(N, q, p, dtype)
        Z = X @ W + b
        J = structured.chain_rule(structured.Dlogit(Z)[0], structured.DX_affine(X, W, b)[0], Z.shape)
        D = dense.chain_rule(dense.Dlogit(Z)[0], dense.DX_affine(X, W, b)[0], Z.shape)
    else:
        raise ValueError(kind)
    return J, D, np.abs(D).astype(np.float64)


KINDS = ("Diagonal", "BlockDiagonal", "KronIW", "KronXI", "KronOneI", "Composed")
CLASSES = {"Diagonal": Diagonal, "BlockDiagonal": BlockDiagonal, "KronIW": KronIW,
           "KronXI": KronXI, "KronOneI": KronOneI, "Composed": Composed}


def build_kind(kind, mk, dtype, dims):
    """``build`` with the kind's natural shapes from dims (N, d, k, m)."""
    N, d, k, m = dims
    if kind == "Diagonal":
        return build(kind, mk, dtype, N, k, k)
    if kind == "BlockDiagonal":
        return build(kind, mk, dtype, N, m, m)
    return build(kind, mk, dtype, N, k, d)


def tensordot(Dg, Df, dim):
    """The lecture's chain rule, written out: contract Dg's last ``dim`` axes with Df's first."""
    return np.tensordot(Dg, Df, axes=(list(range(Dg.ndim - dim, Dg.ndim)), list(range(dim))))


def check_against_tensordot(got, Dg, Df, dim, dtypes, tolerance, assert_close, what, Sg=None, Sf=None):
    """``got`` (ndarray or Jacobian) equals tensordot(Dg, Df) and so does fastjac.dense.

    Sg, Sf: entrywise error scales of Dg, Df (default |Dg|, |Df|).
    """
    expected = tensordot(Dg, Df, dim)
    Sg = np.abs(Dg).astype(np.float64) if Sg is None else Sg
    Sf = np.abs(Df).astype(np.float64) if Sf is None else Sf
    bound = tensordot(Sg, Sf, dim)
    rtol = tolerance(*dtypes, n=prod(Df.shape[:dim]))
    ref = dense.chain_rule(Dg, Df, Df.shape[:dim])
    assert ref.dtype == expected.dtype
    assert_close(ref, expected, rtol, bound, what=f"dense.chain_rule {what}")
    if isinstance(got, Jacobian):
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype
        got = got.to_dense()
    assert isinstance(got, np.ndarray)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    assert_close(got, expected, rtol, bound, what=f"structured.chain_rule {what}")
    return expected, bound, rtol


# --- dense x dense --------------------------------------------------------------

@given(batch=extra_st, mid=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
       rest=extra_st, dtypes=st.tuples(dtype_st, dtype_st), seed=seed_st,
       layouts=st.tuples(layout_st, layout_st))
@example(batch=(), mid=(1,), rest=(), dtypes=(np.float64, np.float64), seed=0, layouts=("C", "C"))
def test_dense_dense(batch, mid, rest, dtypes, seed, layouts, relayout, tolerance, assert_close):
    rng = np.random.default_rng(seed)
    Dg = relayout(rng.standard_normal(batch + mid).astype(dtypes[0]), layouts[0])
    Df = relayout(rng.standard_normal(mid + rest).astype(dtypes[1]), layouts[1])
    got = structured.chain_rule(Dg, Df, mid)
    assert got.shape == batch + rest
    check_against_tensordot(got, Dg, Df, len(mid), dtypes, tolerance, assert_close, "dense x dense")
    np.testing.assert_array_equal(lecture.chain_rule(Dg, Df, mid), tensordot(Dg, Df, len(mid)))


# --- dense x structured: Df.vjp, including a batch (L..., *out) of cotangents ------

@pytest.mark.parametrize("kind", KINDS)
@given(dims=dims_st, dtypes=st.tuples(dtype_st, dtype_st), batch=extra_st, seed=seed_st,
       layout=layout_st)
@example(dims=(1, 1, 1, 1), dtypes=(np.float32, np.float32), batch=(), seed=0, layout="C")
@example(dims=(1, 1, 1, 1), dtypes=(np.float64, np.float32), batch=(1, 1), seed=1, layout="F")
@example(dims=(3, 2, 4, 2), dtypes=(np.float64, np.float64), batch=(3, 4), seed=2, layout="strided")
def test_dense_structured(kind, dims, dtypes, batch, seed, layout, relayout, tolerance, assert_close):
    mk = Maker(seed, layout, relayout)
    J, D, S = build_kind(kind, mk, dtypes[1], dims)
    assert isinstance(J, CLASSES[kind])
    Dg = mk.array(batch + J.out_shape, dtypes[0])
    got = structured.chain_rule(Dg, J, J.out_shape)
    assert got.shape == batch + J.in_shape
    check_against_tensordot(got, Dg, D, len(J.out_shape), dtypes, tolerance, assert_close,
                            f"dense x {kind}", Sf=S)
    vjp = J.vjp(Dg)
    assert vjp.shape == got.shape and vjp.dtype == got.dtype
    np.testing.assert_array_equal(vjp, got)


# --- structured x dense: Dg.jvp, including full Jacobian tensors as Df -------------

@pytest.mark.parametrize("kind", KINDS)
@given(dims=dims_st, dtypes=st.tuples(dtype_st, dtype_st), rest=extra_st, seed=seed_st,
       layout=layout_st)
@example(dims=(1, 1, 1, 1), dtypes=(np.float32, np.float32), rest=(), seed=0, layout="C")
@example(dims=(1, 1, 1, 1), dtypes=(np.float32, np.float64), rest=(1, 1), seed=1, layout="F")
@example(dims=(3, 2, 4, 2), dtypes=(np.float64, np.float64), rest=(2, 3), seed=2, layout="reversed")
def test_structured_dense(kind, dims, dtypes, rest, seed, layout, relayout, tolerance, assert_close):
    mk = Maker(seed, layout, relayout)
    J, D, S = build_kind(kind, mk, dtypes[0], dims)
    assert isinstance(J, CLASSES[kind])
    Df = mk.array(J.in_shape + rest, dtypes[1])
    got = structured.chain_rule(J, Df, J.in_shape)
    assert got.shape == J.out_shape + rest
    check_against_tensordot(got, D, Df, len(J.in_shape), dtypes, tolerance, assert_close,
                            f"{kind} x dense", Sg=S)
    jvp = J.jvp(Df)
    assert jvp.shape == got.shape and jvp.dtype == got.dtype
    np.testing.assert_array_equal(jvp, got)


# --- structured x structured ------------------------------------------------------

# (outer kind, inner kind, result class, shapes): inner maps (N, c) -> (N, b),
# outer (N, b) -> (N, a); dims drawn as (N, a, b, c).
PAIRS = [
    ("Diagonal", "Diagonal", Diagonal),
    ("BlockDiagonal", "Diagonal", BlockDiagonal),
    ("Diagonal", "BlockDiagonal", BlockDiagonal),
    ("BlockDiagonal", "BlockDiagonal", BlockDiagonal),
    ("Diagonal", "KronXI", Composed),        # logit(X W1 + b1) in W1: forward mode of layer 1
    ("KronIW", "Diagonal", Composed),        # logit(Z1) W2 in Z1
    ("BlockDiagonal", "KronIW", Composed),   # softmax(X2 W2 + b2) in X2
    ("KronIW", "KronIW", Composed),          # two affine maps in their input
    ("Diagonal", "KronOneI", Composed),      # logit(X W + b) in b
    ("KronXI", "Diagonal", Composed),        # a KronXI as the outer map (its input is (d, k))
    ("KronOneI", "Diagonal", Composed),      # a KronOneI as the outer map (its input is (k,))
    ("Composed", "Diagonal", Composed),
    ("BlockDiagonal", "Composed", Composed),
    ("Composed", "Composed", Composed),
]


def build_pair(outer_kind, inner_kind, mk, dtypes, dims):
    N, a, b, c = dims
    # square kinds force equal sizes on their side
    if outer_kind == "Diagonal":
        a = b
    if inner_kind == "Diagonal":
        c = b
    if outer_kind == "KronXI":        # input (q, p) = the inner output (N, b); a rows of its own
        return build("KronXI", mk, dtypes[0], a, b, N), build(inner_kind, mk, dtypes[1], N, b, b)
    if outer_kind == "KronOneI":      # input (p,): the inner map must produce a vector
        inner = Diagonal(structured.logit(mk.array((b,), dtypes[1], 3)))
        inner_dense = inner.to_dense()
        return (build("KronOneI", mk, dtypes[0], N, b, a),
                (inner, inner_dense, np.abs(inner_dense).astype(np.float64)))
    return build(outer_kind, mk, dtypes[0], N, a, b), build(inner_kind, mk, dtypes[1], N, b, c)


@pytest.mark.parametrize("outer_kind,inner_kind,result_cls", PAIRS,
                         ids=[f"{o}-{i}" for o, i, _ in PAIRS])
@given(dims=dims_st, dtypes=st.tuples(dtype_st, dtype_st), seed=seed_st, layout=layout_st,
       batch=extra_st, rest=extra_st)
@example(dims=(1, 1, 1, 1), dtypes=(np.float32, np.float32), seed=0, layout="C", batch=(), rest=())
@example(dims=(4, 3, 1, 2), dtypes=(np.float64, np.float32), seed=1, layout="F", batch=(2,),
         rest=(1, 2))
def test_structured_structured(outer_kind, inner_kind, result_cls, dims, dtypes, seed, layout,
                               batch, rest, relayout, tolerance, assert_close):
    mk = Maker(seed, layout, relayout)
    (outer, outer_dense, Sg), (inner, inner_dense, Sf) = build_pair(outer_kind, inner_kind, mk,
                                                                    dtypes, dims)
    dim = len(outer.in_shape)
    J = structured.chain_rule(outer, inner, outer.in_shape)
    assert type(J) is result_cls
    assert J.out_shape == outer.out_shape and J.in_shape == inner.in_shape
    assert J.shape == J.to_dense().shape
    _, bound, rtol = check_against_tensordot(J, outer_dense, inner_dense, dim, dtypes, tolerance,
                                             assert_close, f"{outer_kind} o {inner_kind}", Sg, Sf)
    expected = tensordot(outer_dense, inner_dense, dim)

    S = J.to_scipy()
    assert S.format == "csr" and S.shape == (prod(J.out_shape), prod(J.in_shape))
    assert_close(S.toarray(), expected.reshape(S.shape), rtol, bound.reshape(S.shape), "to_scipy")

    # the product, structured or lazy, must still contract from both sides
    nout, nin = len(J.out_shape), len(J.in_shape)
    G = mk.array(batch + J.out_shape, np.float64)
    F = mk.array(J.in_shape + rest, np.float64)
    n_all = prod(J.out_shape) * prod(outer.in_shape) * prod(J.in_shape)
    for got, want, bnd in (
        (structured.chain_rule(G, J, J.out_shape), tensordot(G, expected, nout),
         tensordot(np.abs(G), bound, nout)),
        (J.vjp(G), tensordot(G, expected, nout), tensordot(np.abs(G), bound, nout)),
        (structured.chain_rule(J, F, J.in_shape), tensordot(expected, F, nin),
         tensordot(bound, np.abs(F), nin)),
        (J.jvp(F), tensordot(expected, F, nin), tensordot(bound, np.abs(F), nin)),
    ):
        assert_close(got, want, tolerance(*dtypes, n=n_all), bnd, "contraction of the product")


# --- whole-network Jacobians: full dense tensors as Dg ------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [(1, 1, 1, 1), (4, 3, 2, 3), (5, 2, 1, 2)])
def test_full_jacobian_of_network_output(dims, dtype, rng, tolerance, assert_close):
    """D_{W1} Q and D_{b1} Q with the dense D_{Z2} Q (N, m, N, m) as the first Dg.

    Every later Dg is a dense (L..., N, p) tensor with L = (N, m): the batch
    (full-Jacobian) case of ``chain_rule(dense, structured)``.
    """
    N, d, k, m = dims
    X = rng.standard_normal((N, d)).astype(dtype)
    W1, b1 = rng.standard_normal((d, k)).astype(dtype), rng.standard_normal((1, k)).astype(dtype)
    W2, b2 = rng.standard_normal((k, m)).astype(dtype), rng.standard_normal((1, m)).astype(dtype)
    Z1 = X @ W1 + b1
    X2 = dense.logit(Z1)
    Z2 = X2 @ W2 + b2
    D_Z2 = dense.Dmatrix_softmax(Z2)[0]

    def factors(mod):
        return [mod.DX_affine(X2, W2, b2), mod.Dlogit(Z1)], \
            [mod.DW_affine(X, W1, b1), mod.Db_affine(X, W1, b1)]

    def full(mod, first, absolute=False):
        chain, last = factors(mod)
        D = (lambda J: np.abs(J).astype(np.float64)) if absolute else (lambda J: J)
        g = first
        for J, shape in chain:
            g = mod.chain_rule(g, D(J), shape)
        return [mod.chain_rule(g, D(J), shape) for J, shape in last]

    want = full(dense, D_Z2)
    got = full(structured, D_Z2)
    bounds = full(dense, np.abs(D_Z2).astype(np.float64), absolute=True)
    rtol = tolerance(dtype, n=N * max(k, m))
    for g, w, bnd, name, shape in zip(got, want, bounds, ("W1", "b1"), ((N, m, d, k), (N, m, k))):
        assert g.shape == w.shape == shape
        assert g.dtype == w.dtype == dtype
        assert_close(g, w, rtol, bnd, what=f"D_{name} Q")


# --- var_shape and errors ------------------------------------------------------------

def test_only_the_length_of_var_shape_is_used(rng):
    """The lecture passes the differentiated variable's shape, e.g. (1, k) for b.

    Only its length counts.
    """
    N, k = 4, 3
    G = rng.standard_normal((N, k))
    args = rng.standard_normal((N, 2)), rng.standard_normal((2, k)), np.zeros((1, k))
    J, b_shape = structured.Db_affine(*args)
    D = dense.Db_affine(*args)[0]
    assert b_shape == (1, k)
    got = structured.chain_rule(G, J, b_shape)
    np.testing.assert_allclose(got, structured.chain_rule(G, J, (N, k)), rtol=0, atol=0)
    np.testing.assert_allclose(got, dense.chain_rule(G, D, b_shape), rtol=1e-12)
    assert got.shape == (k,)


@pytest.mark.parametrize("mod", [dense, structured], ids=["dense", "structured"])
def test_mismatched_axes_are_a_value_error(mod, rng):
    Dg = rng.standard_normal((2, 3, 4))
    Df = rng.standard_normal((3, 5, 6))
    with pytest.raises(ValueError, match="must match"):
        mod.chain_rule(Dg, Df, (4,))
    with pytest.raises(ValueError):
        mod.chain_rule(Dg, Df, (1, 2, 3, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_structured_mismatch_is_a_value_error(kind, rng, relayout):
    mk = Maker(0, "C", relayout)
    J, _, _ = build_kind(kind, mk, np.float64, (3, 2, 4, 2))
    wrong_out = tuple(s + 1 for s in J.out_shape)
    wrong_in = tuple(s + 1 for s in J.in_shape)
    with pytest.raises(ValueError):
        structured.chain_rule(rng.standard_normal((2,) + wrong_out), J, wrong_out)
    with pytest.raises(ValueError):
        structured.chain_rule(J, rng.standard_normal(wrong_in + (2,)), wrong_in)
    with pytest.raises(ValueError):
        J.vjp(rng.standard_normal(wrong_out))
    with pytest.raises(ValueError):
        J.jvp(rng.standard_normal(wrong_in))
    # a structured Jacobian must be contracted over all of its axes on that side
    with pytest.raises(ValueError, match="all of its"):
        structured.chain_rule(rng.standard_normal((2, J.out_shape[0])), J, (1,))
