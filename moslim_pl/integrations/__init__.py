"""Bridges to other libraries (``trl``): MOSLIM reward models used where those libraries expect rewards."""
