"""runink.sdk: what step code imports.

A ``python: module:function`` step is called as ``function(ctx)`` with a `Context` (params,
input/output dataset paths, secrets, results, a logger, metrics). A ``command:`` step can build
one itself with ``Context()`` inside the slice.
"""

from runink.sdk._context import Context

__all__ = ["Context"]
