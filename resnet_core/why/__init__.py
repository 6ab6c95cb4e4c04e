"""Why residual nets work, measured: the gradient's split at each addition (split.py), the
lesion study (lesion.py), the loss landscape (landscape.py) and path lengths (paths.py)."""
