"""Model runtimes behind one interface: the core and the front ends never touch an engine."""

from services.serving.runtimes.base import ModelRuntime, RuntimeFactory, detect_runtime

__all__ = ["ModelRuntime", "RuntimeFactory", "detect_runtime"]
