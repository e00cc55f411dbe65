"""The integrator portal: one-time links, and the web pages they open."""
