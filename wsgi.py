"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from service import create_app

app = create_app()
