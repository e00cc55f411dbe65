"""Erasures: forgetting a patient's personal data on request, or after a while."""
