"""person.vectors: the one row normalisation the runtime, gallery, parity check and label evaluation share."""
import numpy as np

from person.vectors import unit_rows


def test_unit_rows_values_dtype_and_zero_rows():
    x = np.array([[3, 4], [0, 0], [-2, 0]], dtype=np.float16)
    out = unit_rows(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[0.6, 0.8], [0, 0], [-1, 0]], dtype=np.float32))
    wide = unit_rows(np.array([[1e-3, 0, 0]]), np.float64)
    assert wide.dtype == np.float64 and wide[0, 0] == 1.0
    half = unit_rows(np.array([[0, 0], [0, 2]]), np.float16)
    assert half.dtype == np.float16 and half.tolist() == [[0, 0], [0, 1]]
