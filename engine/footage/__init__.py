"""Real footage: reading a clip as a viewer shows it (``read``: probe and decode), the working grid
the model sees it on (``grid``), a shot planned from the media's probes (``shots``) and read onto
the grid when its job runs (``shot_clip``), and the output written back at the source's geometry
(``output``, its files by ``writers``)."""
