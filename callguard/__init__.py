"""callguard: spam screening and missed-call leads beside an Asterisk PBX."""

__version__ = "0.1.0"
