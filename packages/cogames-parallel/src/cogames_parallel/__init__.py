"""cogames-parallel."""
