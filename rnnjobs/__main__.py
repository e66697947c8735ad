"""Run the command-line interface as ``python -m rnnjobs``."""

from rnnjobs.cli import main

main(prog_name="rnnjobs")
