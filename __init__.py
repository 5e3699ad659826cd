"""crmsync: keep CRM segments current as lists, campaigns and ad audiences."""

__version__ = "0.1.0"
