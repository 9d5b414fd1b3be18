"""The toy lab: a procedural world with ground truth (``world``), model sizes and builders
(``architectures``, ``model``), and the training that made the built-in model (``train``).

Nothing under ``framecast.engine`` outside this package imports it: the serving engine loads
the built-in model from its directory like any other.
"""
