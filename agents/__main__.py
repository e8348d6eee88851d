"""``python -m agents``: the training CLI (:mod:`agents.cli`); ``--help`` lists every flag."""

from agents.cli import main

main()
