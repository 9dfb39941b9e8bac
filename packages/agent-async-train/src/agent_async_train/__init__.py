"""agent-async-train."""
