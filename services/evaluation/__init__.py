"""Evaluation's computational core: deterministic metrics, statistics and judge arithmetic."""
