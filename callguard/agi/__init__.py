"""FastAGI: the wire format (pure) and the server."""
