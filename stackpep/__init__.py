"""stackpep: a transparent split-connection TCP Performance Enhancing Proxy."""

__version__ = "0.1.0"

__all__ = ["__version__", "open_pep"]


def __getattr__(name):
    # `stackpep.open_pep` without importing trio/pyroute2 for `import stackpep`.
    if name == "open_pep":
        from stackpep.pep.api import open_pep

        return open_pep
    raise AttributeError(f"module 'stackpep' has no attribute {name!r}")
