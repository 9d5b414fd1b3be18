"""Memory: quantisation, attention and offloading (``lowvram``), what weights and adapters take
(``sizes``), and the memory model (``model``) that traces a job's phases (``phases``, counted by
``trace``) to say what a job needs before it runs."""
