"""Calibration frame sets and the precision gate that accepts or refuses an exported model."""

from .frames import CalibrationPair, calibration_pairs
from .gate import DEFAULT_TOLERANCE_MM, GateError, GateReport, run_gate

__all__ = ["CalibrationPair", "calibration_pairs", "DEFAULT_TOLERANCE_MM", "GateError", "GateReport", "run_gate"]
