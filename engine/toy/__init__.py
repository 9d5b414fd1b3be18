"""The toy lab: a procedural world with ground truth (``world``), model sizes and builders
(``architectures``, ``model``), the training that made the built-in model (``train``), its command
line (``cli``), and the demo that runs a toy scene through a real server and client (``demo``).

Nothing under ``framecast.engine`` outside this package imports it: the serving engine loads
the built-in model from its directory like any other.
"""
