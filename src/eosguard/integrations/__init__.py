"""Integrations: put eosguard's checks into trainers you already use.

from eosguard.integrations import guard_trainer, StopRateCallback
guard_trainer(trainer)                        # transformers.Trainer, TRL's SFTTrainer, GRPOTrainer, RLOOTrainer
trainer.add_callback(StopRateCallback(heldout, every=200))

"""

from eosguard.integrations.callbacks import StopRateCallback
from eosguard.integrations.trainer_guard import guard_trainer

__all__ = ["StopRateCallback", "guard_trainer"]
