"""Grids of attack and defense cells: the stealth-strength frontier and the bench."""
