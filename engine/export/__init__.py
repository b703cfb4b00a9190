"""``lepton export``: a trained model as ONNX, a ``torch.export`` program or plain
safetensors weights, optionally int8-quantized, beside a ``task.json`` so that
``lepton evaluate`` / ``predict`` / ``serve`` take it like a checkpoint."""
