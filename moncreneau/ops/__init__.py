"""Running the processes: logs, metrics, the gunicorn server, migrations, housekeeping."""
