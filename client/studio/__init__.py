"""framecast studio: a web page for the people who make the edits (docs/studio.md).

``framecast studio --server HOST:PORT`` serves it (``framecast.client.cli.studio``, with ``server``'s
uvicorn in a thread): ``app`` is the page's JSON API over one ``FramecastClient``, ``views`` turns the page's requests into the client's arguments and the server's
messages into JSON, ``media`` keeps the copies the page plays; ``static/`` is the page itself (HTML,
CSS and JavaScript of its own: nothing is fetched from elsewhere). Imports neither torch nor the engine.
"""
