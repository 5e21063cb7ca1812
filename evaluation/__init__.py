"""Metrics for generated videos and the reports built from them."""
