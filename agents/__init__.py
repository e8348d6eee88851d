"""Credit-aware RL agents for the abc_gym token envs (see docs/agents.md).

Modules: policy (TransformerActorCriticPolicy), buffers (credit write-back), kl (KL penalty),
algorithms (PPO, A2C, TRPO, MaskablePPO), token_ppo (TokenPPO), train (CLI and API).
Heavy imports are left to the submodules.
"""
