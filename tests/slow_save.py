"""`eosguard` with a checkpoint writer that pauses before its final rename, so a test can kill a save midway.

Run as:
    python tests/slow_save.py train CONFIG.yaml ...   # same arguments as `eosguard`
"""

import time

from eosguard.cli.app import main
from eosguard.training.checkpoints import CheckpointWriter

_commit = CheckpointWriter.commit


def _slow_commit(staging, final):
    time.sleep(1.0)
    _commit(staging, final)


CheckpointWriter.commit = staticmethod(_slow_commit)

if __name__ == "__main__":
    main()
