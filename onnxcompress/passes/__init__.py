"""Graph passes. Each is an ``onnx_ir.passes`` pass with a ``report`` dict it fills when run."""
