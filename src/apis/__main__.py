"""``python -m apis`` is the ``apis`` command (and ``torchrun -m apis run ...`` its multi-process launch)."""

from apis.cli import main

main()
