"""Detectors: numerical checks on what a model receives and returns.

The one part of ``core`` that may use numpy (and, later, scipy and scikit-learn): ``inputs``
validates every inference request against the model version's signed input schema. Like the
rest of core it does no I/O and keeps no state beyond what its constructor compiles.
"""
