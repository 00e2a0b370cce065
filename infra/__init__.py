"""repmon: infra."""
