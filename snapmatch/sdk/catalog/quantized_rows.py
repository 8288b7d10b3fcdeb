"""An int8 copy of a small catalog's vectors: a quarter of the bytes to read per query, with a proven error bound.

An exact search reads every stored vector; at 2,000-20,000 x 960 float32
(8-77 MB) that read, not the arithmetic, is the cost. Here each row is also
kept as int8 with its own scale, scanned with numkong's int8 dot kernel (numkong
comes with usearch). The int8 score of a row differs from its float32 score by
at most

    |q'| |x - x'|  +  |q - q'| |x|

(x' = s_x * int8 row: the rounded row, q' the rounded query; Cauchy-Schwarz on
the two terms of q.x - q'.x'). Each row keeps |x - x'| and |x|. So the rows that can hold a top-k
product's best image are known for certain from the int8 scan alone, and only
those are scored again in float32: the answer is the exact one, not an
approximation (DenseSnapshot.search).
"""

from __future__ import annotations

import numkong
import numpy as np

LEVELS = 127  # -127..127: symmetric, a vector and its negation quantize alike
SLACK = 1e-5  # float rounding: of the bound's own arithmetic and of the float32 scores it is compared with


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as int8 [n, d] and their scales float64 [n] (row ~= scale * int8 row)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    scales = np.abs(vectors).max(axis=1, initial=0.0).astype(np.float64) / LEVELS
    scales[scales == 0] = 1.0  # an all-zero row: any scale gives zeros
    rows = np.rint(vectors / scales[:, None]).clip(-LEVELS, LEVELS).astype(np.int8)
    return rows, scales


class QuantizedRows:
    """int8 rows with their scales and error norms: bounds on every row's float score from one int8 scan."""

    def __init__(self, rows: np.ndarray, scales: np.ndarray, residuals: np.ndarray, norms: np.ndarray) -> None:
        self.rows, self.scales, self.residuals, self.norms = rows, scales, residuals, norms

    def bounds(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds [n] on each row's float32 dot product with one query [d]."""
        query = np.asarray(query, dtype=np.float32)
        query_rows, (query_scale,) = quantize(query[None])
        rounded = query_rows[0] * query_scale
        # numkong's row-by-row int8 kernel; its packed-matrix form is slower for a single query on AVX2
        dots = np.asarray(numkong.cdist(query_rows, self.rows, metric="dot"))[0]
        approx = dots * (self.scales * query_scale)
        # q.x - q'.x' = q'.(x - x') + (q - q').x, each term bounded by Cauchy-Schwarz
        error = float(np.linalg.norm(rounded)) * self.residuals + float(np.linalg.norm(query - rounded)) * self.norms
        error += SLACK
        return approx - error, approx + error


def quantized_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(int8 rows, scales, residual norms, norms) of float rows: what DenseIndex keeps beside the float32 copy."""
    vectors = np.asarray(vectors, dtype=np.float32)
    rows, scales = quantize(vectors)
    residuals = np.linalg.norm(vectors - rows * scales[:, None], axis=1)
    return rows, scales, residuals, np.linalg.norm(vectors.astype(np.float64), axis=1)
