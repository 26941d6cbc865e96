"""paretoprune.metrics."""
