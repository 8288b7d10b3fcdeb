"""torch -> ONNX -> int8, and the parity report that checks the int8 model against the fp32 one.

Needs the `train` extra (torch, onnx); torch is imported only by `export_onnx`.
"""

from snapmatch.export.onnx_export import ExportError, ExportSpec, export_onnx, weights_model_id
from snapmatch.export.parity import format_report, parity_report
from snapmatch.export.quantize import QuantizationError, QuantizeConfig, quantize_int8

__all__ = [
    "ExportError",
    "ExportSpec",
    "QuantizationError",
    "QuantizeConfig",
    "export_onnx",
    "format_report",
    "parity_report",
    "quantize_int8",
    "weights_model_id",
]
