"""Tools for integrators: a local receiver that prints what it gets, and sample events."""
