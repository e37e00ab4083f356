"""Segments as configuration: the rule language (``rules``: parse, check, compile to
SQL) and the segments file (``config``: definitions, destinations, consent channels).
Membership itself is computed by the build's ``segments`` stage."""
