"""The model: `Embedder` (an onnxruntime session) and the contract a snapmatch .onnx file carries (model_spec)."""
