"""Benchmarks that print measured numbers with the machine they ran on."""
