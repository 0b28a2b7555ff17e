"""Wire-layer errors: IntegrityError (unusable bytes) vs SanityError (legal bytes,
illegal meaning), after PyTCP.  Each carries `.code` (WIRE_* in wire.pxd) and
`.counter`, the name of the counter its rejection incremented."""
from stackpep._fast.wire import (  # noqa: F401  (re-exports)
    COUNTER_NAMES,
    ERRORS,
    IntegrityError,
    SanityError,
    WireError,
    error_for,
    is_integrity,
)

__all__ = ["WireError", "IntegrityError", "SanityError", "ERRORS", "COUNTER_NAMES", "error_for", "is_integrity"]
