"""Registered Gymnasium environments and the batched core behind them.

Importing this package registers every id (see :mod:`synthmatch.envs.registration`).
"""

from synthmatch.envs.core import SynthMatchCore
from synthmatch.envs.registration import env_ids, register_all
from synthmatch.envs.sb3 import SB3VecEnv, make_sb3_vec_env
from synthmatch.envs.single import SynthMatchEnv
from synthmatch.envs.vector import SynthMatchVectorEnv

register_all()

__all__ = ["SB3VecEnv", "SynthMatchCore", "SynthMatchEnv", "SynthMatchVectorEnv", "env_ids",
           "make_sb3_vec_env", "register_all"]
