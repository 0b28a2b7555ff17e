"""The proxy: TOML configuration, dispatcher, split connections, `open_pep`, CLI."""
from __future__ import annotations


def __getattr__(name):  # lazy: `import stackpep` must not pull in trio/pyroute2
    if name in ("open_pep", "Pep"):
        from stackpep.pep import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["open_pep", "Pep"]
