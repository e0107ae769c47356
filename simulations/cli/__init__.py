"""The ``fedrec`` command."""
