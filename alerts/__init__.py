"""repmon: alerts."""
