"""Missed-call leads: the model, the durable outbox and its log and webhook sinks."""
