"""Test data: generators for files that are made, not committed (see generate.py)."""
