"""Trusted oracle implementations for the hidden suites, device-agnostic (CPU and CUDA).

The judge imports these; learner code never does. Each module reads like
nanoGPT: short, typed, a shape comment on each line that reshapes.
"""
