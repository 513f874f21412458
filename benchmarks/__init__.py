"""Benchmarks: scripts that print figures (``make bench``); they are not tests."""
