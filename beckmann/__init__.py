"""beckmann: finite elements for Beckmann's optimal-transport problem with squared flux."""

__version__ = "0.1.0"
