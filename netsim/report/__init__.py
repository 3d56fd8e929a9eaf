"""Presenting results: terminal progress and summaries now; plots and HTML reports later."""
