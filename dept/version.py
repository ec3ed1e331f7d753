"""The package's version (its own module: the run records read it without importing the package)."""
__version__ = "0.1.0"
