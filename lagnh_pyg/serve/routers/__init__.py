"""One router per resource: ``meta`` (health, info), ``search``, ``items``."""
