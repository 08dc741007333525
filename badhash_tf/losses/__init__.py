"""Losses as plain tensor functions, one per function."""
