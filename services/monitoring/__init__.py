"""Monitoring: inference tables from payload logs, windowed profiles, drift statistics and events."""
