"""paretoprune.search."""
