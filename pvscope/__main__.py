"""``python -m pvscope``."""

from pvscope.cli import main

main()
