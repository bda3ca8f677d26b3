"""`make bench`: the balancing methods side by side on the lab (see __main__.py)."""
