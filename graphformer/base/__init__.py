"""Errors, diagnostics and their codes, the dimension algebra, graph algorithms, bounded file reading and atomic output: what every layer may use."""
