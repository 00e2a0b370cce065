"""The event contract: raw, enriched, signal, incident and dead-letter records (pydantic)."""
