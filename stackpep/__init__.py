"""stackpep: a transparent split-connection TCP Performance Enhancing Proxy."""

__version__ = "0.1.0"

__all__ = ["__version__"]
