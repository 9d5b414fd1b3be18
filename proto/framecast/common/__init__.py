"""``framecast.common``: what the client and the server side share, torch-free and engine-free.

- ``media``: encoding frames (H.264, PNG, a zip of PNGs), masks to and from frames, atomic writes;
- ``requests``: what a caller asks the engine for, with every default in one place (the client's
  command line shows them);
- ``arguments``: the option value types every framecast command line uses.

The client imports these and never the engine; the engine and the server import them too.
Nothing here imports another part of framecast, torch, diffusers or gRPC (tests/test_layout.py).
It lives in the ``framecast`` root package (``proto/framecast``, the root of the namespace every
part imports) because neither ``framecast.client`` nor ``framecast.engine`` may import the other.
"""
