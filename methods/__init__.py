"""Alignment methods, one module each; the module name is the method id (``bench.registry`` lists them)."""
