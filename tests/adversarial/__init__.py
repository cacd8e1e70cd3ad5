"""Adversarial end-to-end tests: a hostile skill against a real egress, one module per attack
class. Every test asserts on what the recording upstream received (tests/recording.py) and on
the audit log, never only on the status the client saw."""
