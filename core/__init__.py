"""The ground every other module stands on: the time seam (``core.clock``) and the one
exception tree (``core.errors``). Nothing here imports any other module of the project."""
