"""The HTML report written beside the analyst database: ``html`` (the page) and
``charts`` (inline SVG)."""
