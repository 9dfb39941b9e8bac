"""Tolaria: tasks, data on devices, and the per-environment training step (with AMP)."""
