"""Adapters: the disk store (``store``), their file formats (``formats``), the device and host
caches (``cache``), the hot-swap slot on the transformer (``slots``), and the manager the engine
and the server go through (``manager``)."""
