"""The toolkit's version, recorded in every file it writes (pyproject.toml states the same number)."""

__version__ = "0.1.0"
