"""transfer: move container images across air gaps, digest for digest."""

__version__ = "0.1.0"
