"""`python -m console`: the same as the `gpuserve` command."""

from console.app import main

main()
