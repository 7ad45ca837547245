"""The gpuserve CrossGuard policy pack. `validators.py` holds one pure function per
policy; `pack.py` wraps them as pulumi_policy policies; `__main__.py` serves the pack."""
