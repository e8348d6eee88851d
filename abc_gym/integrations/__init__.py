"""Adapters of :func:`abc_gym.batch_credit.token_level_rewards` for RLHF engines.

Each submodule imports its engine (``abc_gym.integrations.verl`` imports verl); this package
imports nothing, so ``import abc_gym.integrations`` works without any engine installed.
"""
