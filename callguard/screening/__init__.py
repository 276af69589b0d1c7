"""Screening: the rules (pure) and the screener that applies them to a request."""
