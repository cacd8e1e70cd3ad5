"""egress: an outbound allowlist proxy for AI-agent skills."""
__version__ = "0.1.0"
