"""empo-distributed."""
