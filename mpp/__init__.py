"""mpp-channels: the Python toolkit for MPP payment channels."""

__version__ = "0.1.0"
