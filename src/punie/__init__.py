"""Punie: a local trainer for agent models."""

__version__ = "0.1.0"
