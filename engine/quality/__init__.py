"""Quality measures: the metrics on frames (``metrics``), edit fidelity without ground truth
(``fidelity``), and the measures of the delivered file (``delivered``)."""
