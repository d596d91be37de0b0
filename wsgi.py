"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

import gc

from service import create_app

app = create_app()
# What start-up built (modules, the app, its templates: about 85,000 objects) lives as long as
# the process. Frozen, it is left out of the collector's full passes, each of which walked all of
# it (56-67 ms, every thread of the worker waiting), about once every few thousand requests.
# Start-up's own garbage is collected first: a frozen object is never freed.
gc.collect()
gc.freeze()
