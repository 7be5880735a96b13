"""``fastjac.views``: the kernels' views of flat buffers equal numpy's slices and reshapes.

Each view must be numpy's ``buf[a:a + r c].reshape((r, c))`` (``view2``),
``buf[a:a + n]`` (``view1``) or ``A[a:b]`` (``row_range``) in shape, values and
memory: writes through it land in the buffer, and a view returned from a kernel
keeps its buffer alive. Buffers of another dimension or layout do not compile.
"""

import gc
import sys

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba.core.errors import TypingError
from numpy.testing import assert_array_equal

from fastjac.views import row_range, view1, view2


@numba.njit
def _view2(buf, start, rows, cols):
    return view2(buf, start, rows, cols)


@numba.njit
def _view1(buf, start, size):
    return view1(buf, start, size)


@numba.njit
def _row_range(A, start, stop):
    return row_range(A, start, stop)


@numba.njit
def _write_ones(buf, start, rows, cols):
    V = view2(buf, start, rows, cols)
    for i in range(rows):
        for j in range(cols):
            V[i, j] = 1.0 + i * cols + j


DTYPES = st.sampled_from([np.float32, np.float64, np.int64])


@st.composite
def spans(draw):
    """A buffer length and a view of it: start, rows, cols with start + rows cols <= length."""
    rows = draw(st.integers(0, 6))
    cols = draw(st.integers(0, 6))
    start = draw(st.integers(0, 10))
    extra = draw(st.integers(0, 5))
    return start + rows * cols + extra, start, rows, cols


@given(span=spans(), dtype=DTYPES)
def test_view2_is_slice_and_reshape(span, dtype):
    size, start, rows, cols = span
    buf = np.arange(size).astype(dtype)
    V = _view2(buf, start, rows, cols)
    expected = buf[start:start + rows * cols].reshape((rows, cols))
    assert V.dtype == buf.dtype and V.shape == expected.shape and V.flags.c_contiguous
    assert_array_equal(V, expected)
    if rows * cols:
        assert np.shares_memory(V, buf)


@given(span=spans())
def test_view2_writes_land_in_the_buffer(span):
    size, start, rows, cols = span
    buf = np.zeros(size)
    _write_ones(buf, start, rows, cols)
    expected = np.zeros(size)
    expected[start:start + rows * cols] = 1.0 + np.arange(rows * cols)
    assert_array_equal(buf, expected)


@given(span=spans(), dtype=DTYPES)
def test_view1_is_slice(span, dtype):
    size, start, rows, cols = span
    buf = np.arange(size).astype(dtype)
    v = _view1(buf, start, rows * cols)
    assert v.dtype == buf.dtype and v.flags.c_contiguous
    assert_array_equal(v, buf[start:start + rows * cols])


@given(rows=st.integers(0, 8), cols=st.integers(0, 5), a=st.integers(0, 8), b=st.integers(0, 8),
       dtype=DTYPES)
def test_row_range_is_row_slice(rows, cols, a, b, dtype):
    start, stop = sorted((min(a, rows), min(b, rows)))
    A = np.arange(rows * cols).astype(dtype).reshape((rows, cols))
    V = _row_range(A, start, stop)
    assert V.dtype == A.dtype and V.shape == (stop - start, cols) and V.flags.c_contiguous
    assert_array_equal(V, A[start:stop])


@pytest.mark.parametrize("make", [lambda buf: _view2(buf, 2, 2, 5), lambda buf: _view1(buf, 3, 4),
                                  lambda buf: _row_range(buf.reshape(4, 3), 1, 3)])
def test_a_returned_view_holds_a_reference_to_its_buffer(make):
    """The view shares the buffer's memory manager (as numpy's views hold their base): the
    buffer's reference count goes up by one while the view lives, and back after."""
    buf = np.arange(12.0)
    before = sys.getrefcount(buf)
    view = make(buf)
    assert sys.getrefcount(buf) == before + 1
    del view
    gc.collect()
    assert sys.getrefcount(buf) == before


@pytest.mark.parametrize("fn, args", [
    (_view2, (np.zeros((3, 4)), 0, 2, 2)),         # a 2-D buffer
    (_view2, (np.zeros(8)[::2], 0, 2, 2)),         # a strided buffer
    (_view1, (np.zeros((3, 4)), 0, 2)),
    (_row_range, (np.zeros(8), 0, 2)),             # a 1-D array
    (_row_range, (np.zeros((4, 3)).T, 0, 2)),      # not C-contiguous
])
def test_other_dimensions_and_layouts_do_not_compile(fn, args):
    with pytest.raises(TypingError):
        fn(*args)
