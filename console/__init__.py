"""The operator's console: the `gpuserve` command (console/app.py)."""
