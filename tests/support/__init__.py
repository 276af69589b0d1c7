"""Reusable test helpers that run real processes (the fake systemd supervisor, the stalling wrapper)."""
