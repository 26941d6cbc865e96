"""paretoprune.evaluators."""
