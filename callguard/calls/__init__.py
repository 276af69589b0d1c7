"""Calls: the pure tracker (AMI events in, outcomes out) and the recorder that makes them durable."""
