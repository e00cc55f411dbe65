"""Departments: where appointments are booked, with their time zone, slot length and capacity."""
