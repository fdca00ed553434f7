"""Fake model servers that speak the real wire protocols, for tests and the benchmark."""
