"""Evaluate: pixel, buffer and APLS scores of a road layer against truth."""
