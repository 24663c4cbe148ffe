"""Deployment: similar-case index, attention maps, ONNX export, and the FastAPI service + web UI."""
