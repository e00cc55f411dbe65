"""WSGI entry point: `gunicorn wsgi:app`."""

from moncreneau.app import create_app

app = create_app()
