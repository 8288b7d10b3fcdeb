"""Evaluation through the runtime: protocols and metrics on any dataset (runtime dependencies only).

Training, export, the parity gate and `snapmatch benchmark accuracy` all measure here.
"""

from snapmatch.evaluation.protocols import PROTOCOLS, evaluate, split_for
from snapmatch.evaluation.report import format_report

__all__ = ["PROTOCOLS", "evaluate", "format_report", "split_for"]
