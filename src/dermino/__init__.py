"""dermino: build, adapt, evaluate and deploy dermatology foundation models."""

__version__ = "0.1.0"
