"""A run's plots: policy against baseline, load and clock, energy breakdown, bands."""
