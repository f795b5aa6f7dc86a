"""The ``rrseg`` command line: one thin module per command."""
