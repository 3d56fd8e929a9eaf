"""The version, in a leaf module: result files and provenance record it, and importing it pulls in nothing."""

__version__ = "0.2.0"
