"""repmon: streams/agents."""
