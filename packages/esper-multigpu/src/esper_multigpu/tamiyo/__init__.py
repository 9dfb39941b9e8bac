"""Tamiyo: training signals and the heuristic (baseline) controller."""
