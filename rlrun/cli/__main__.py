"""``python -m rlrun.cli``: the ``rlrun`` command (its task function comes from rlrun.cli.train, which launchers
that pickle it for other processes can import)."""

from rlrun.cli.train import main

main()
