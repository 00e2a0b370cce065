"""repmon: streams."""
