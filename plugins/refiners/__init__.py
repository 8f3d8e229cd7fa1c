"""Refiners of generated outputs."""
