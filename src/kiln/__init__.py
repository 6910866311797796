"""kiln: build hardware-specific inference engines, cache them, serve them with hot swap."""

__version__ = "0.1.0"
