"""The shipped default configuration files, installed as ``cdp.config`` so that a
command run outside the repository still finds them (``config/segments.toml``)."""
