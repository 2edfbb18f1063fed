"""Replay of measured serving benchmarks (ML.ENERGY format) through the simulator; see `sim.validate`."""
