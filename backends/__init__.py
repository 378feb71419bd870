"""Backends turn IR into runnable artifacts: ``keras`` (models with copied weights), ``onnx``.

Each backend is imported on first use, so the IR and passes stay free of TensorFlow.
"""
