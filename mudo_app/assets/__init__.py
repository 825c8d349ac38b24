"""Package data: the shipped stand-in teachers (``teachers/``). Read through :mod:`mudo_app.resources`."""
