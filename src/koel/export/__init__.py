"""Export koel's model to other runtimes (ONNX), with a parity check against PyTorch."""

from koel.export.onnx_export import EXPORT_FORMAT, ExportError, KokoroExport, check_parity, export_onnx

__all__ = ["EXPORT_FORMAT", "ExportError", "KokoroExport", "check_parity", "export_onnx"]
