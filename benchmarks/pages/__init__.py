"""The results pages: each rendered from its tables into a Markdown template.

The prose of a page (its protocol, what the numbers mean, what we found) lives in its template
under ``benchmarks/templates/``, written by people; the modules here only turn rows into
numbers and tables, and draw the figures.
"""
