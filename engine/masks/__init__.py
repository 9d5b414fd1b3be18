"""Masks people can make: a box, points or a frame-0 mask tracked through a shot (``trackers``,
SAM2 from a local checkpoint in ``sam2``), and the tracked regions kept for the jobs that follow
(``tracks``)."""
