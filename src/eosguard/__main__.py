"""Run as: python -m eosguard --help"""

from eosguard.cli.app import main

main()
