"""Reward models, one module each; the module name is the reward id with '-' written as '_'
(``bench.registry`` lists them)."""
