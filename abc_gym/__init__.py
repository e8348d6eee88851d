"""abc_gym: Gymnasium environments for token-level RL on text with Attention Based Credit.

``import abc_gym`` registers the environment ids (see :mod:`abc_gym.registration`).
"""

from abc_gym.registration import ENV_IDS, register_envs

register_envs()

__version__ = "0.1.0"
__all__ = ["ENV_IDS", "register_envs", "__version__"]
