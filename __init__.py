"""Runink: a declarative, operator-style control plane for data pipelines.

The repository root is this package. Its subpackages follow the architecture, bottom to top:
``schemas`` (the object model) <- ``store`` (the Barn) <- ``api`` | ``controllers`` | ``agent``
<- ``cli`` (the composition root). ``sdk`` is what step code imports inside a slice.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
