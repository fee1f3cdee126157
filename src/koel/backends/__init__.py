"""Inference engines behind one interface (PyTorch now; ONNX Runtime joins through the same API)."""

from koel.backends.base import Engine, EngineRequest, EngineResult
from koel.backends.torch_engine import TorchEngine, select_device

__all__ = ["Engine", "EngineRequest", "EngineResult", "TorchEngine", "select_device"]
