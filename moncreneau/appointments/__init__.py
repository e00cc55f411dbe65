"""Appointments: booking, rescheduling and the lifecycle, over the event store."""
