"""Automatic and manual optimization."""
