"""repmon: connectors."""
