"""AMI: the wire format (pure) and the one client that owns the link."""
