"""`python -m suite.miner`: the same as `chutes-miner`."""

from suite.miner.cli import main

main()
