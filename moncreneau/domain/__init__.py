"""The booking domain in plain Python: appointments, their rules and the events they record."""
