"""The `eosguard` command: it parses and calls one library function per command (`app`), with typed option aliases
shared by every command (`args`) and one printer (`show`). Nothing else imports it.
"""
