"""Run as: python -m eosguard --help"""

from eosguard.cli import main

main()
