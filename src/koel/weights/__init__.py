"""Weights: the embedded int8 ONNX export, the official .pth, koel checkpoints; conversion cache."""
