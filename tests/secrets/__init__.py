"""Tests for egress.secrets: secret values, references, settings, backends, the broker."""
