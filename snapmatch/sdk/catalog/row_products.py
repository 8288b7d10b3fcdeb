"""A few queries times a matrix's rows, on one thread: onnxruntime's Gemm instead of numpy's.

A lookup multiplies one query by the catalog's metric (960 x 960) and by every
stored vector (2,000 x 960 in the latency benchmark). numpy has two ways,
both wrong for a camera's hot path:
- its BLAS product is multi-threaded, and right after an onnxruntime inference
  whose threads still spin on every core it waits for them (2.0 ms instead of
  0.2 ms for 2,000 x 960);
- its own loop (`einsum`) stays on one thread but does not vectorise the way
  BLAS does: 0.49 ms for the same product.
onnxruntime's Gemm on one thread costs what a single-threaded BLAS costs
(0.15 ms), whatever runs beside it, and onnxruntime is already loaded. (Right
after an inference that evicted them from cache, the 11 MB of metric and
vectors make any of the three about 1.4 ms: bound by memory, see BENCHMARKS.) The
graph is a hundred bytes of protobuf, written here by hand so the runtime
needs no `onnx` package; tests check it against `onnx.helper`.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

SMALL_BATCH = 8  # above this many queries, BLAS's threads pay for themselves

_lock = threading.Lock()
_session: ort.InferenceSession | None = None


def row_products(queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """queries [q, d] @ rows [n, d].T as float32 [q, n]: one thread for a few queries, BLAS for many."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if len(queries) > SMALL_BATCH or len(rows) == 0 or len(queries) == 0:
        return queries @ rows.T
    # One query a run: a kernel picked for the batch's shape would round differently, and a photo's
    # scores must not depend on the photos it was sent with.
    session = _gemm()
    return np.concatenate([session.run(None, {"a": queries[i:i + 1], "b": rows})[0] for i in range(len(queries))])


def _gemm() -> ort.InferenceSession:
    global _session
    if _session is not None:  # the hot path: no lock once the session exists
        return _session
    with _lock:
        if _session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            _session = ort.InferenceSession(gemm_model_bytes(), options, providers=["CPUExecutionProvider"])
        return _session


# --- a minimal protobuf writer, enough for one ModelProto --------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | str | int) -> bytes:
    if isinstance(payload, int):  # varint (wire type 0)
        return _varint(number << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload  # length-delimited (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _float_matrix(name: str, rows: str, columns: str) -> bytes:
    """ValueInfoProto of a float [rows, columns] tensor with named (dynamic) dimensions."""
    shape = _field(1, _field(2, rows)) + _field(1, _field(2, columns))
    tensor_type = _field(1, 1) + _field(2, shape)  # elem_type FLOAT = 1
    return _field(1, name) + _field(2, _field(1, tensor_type))


def gemm_model_bytes() -> bytes:
    """ONNX model: c = Gemm(a, b, transB=1), a [q, d], b [n, d] -> c [q, n] (opset 13, IR version 8)."""
    trans_b = _field(1, "transB") + _field(3, 1) + _field(20, 2)  # AttributeProto INT = 2
    node = _field(1, "a") + _field(1, "b") + _field(2, "c") + _field(3, "gemm") + _field(4, "Gemm") + _field(5, trans_b)
    graph = (_field(1, node) + _field(2, "row_products") + _field(11, _float_matrix("a", "q", "d"))
             + _field(11, _float_matrix("b", "n", "d")) + _field(12, _float_matrix("c", "q", "n")))
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 8) + _field(7, graph) + _field(8, opset)
