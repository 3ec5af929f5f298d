"""Tests that drive a real browser (Debian chromium via Playwright); see conftest.py."""
