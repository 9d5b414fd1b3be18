"""The method (docs/method.md): the mask-aware conditioning (``conditioning``), the windows a long
clip is cut into (``windows``), the VAE and text encoders (``encoding``), LoRA training
(``training``), sampling (``sampling``), and a propagation window by window (``propagation``)."""
