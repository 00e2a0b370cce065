"""repmon: models."""
