"""Pure compute: numpy arrays in, numpy arrays and dataclasses out.

Nothing here imports the rest of edge_app, so the vision code can be reused and tested alone.
Errors are built-in exceptions (ValueError, FileNotFoundError); callers wrap them."""
