"""The package version (one place; ``sim4seg.__version__`` re-exports it)."""

__version__ = "0.1.0"
