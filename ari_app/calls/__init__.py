"""Channel events -> calls: the pure tracker, call state and rules, the pipeline."""
