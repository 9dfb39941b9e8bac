"""Shared parallel core."""
