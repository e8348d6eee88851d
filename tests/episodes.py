"""Finished env episodes and the padded batches an RLHF engine would build from them (batch credit tests)."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from abc_gym.infos import unpad_episode

ENV = "abc_gym/Sentiment-v0"
# Short, mixed lengths (EOS may end an episode early too): fast, and rows of one batch differ.
LENGTHS = {"min_new_tokens": 2, "max_new_tokens": 9}


@dataclass
class Episode:
    """One finished episode: what the env saw and paid."""

    prompt_ids: list[int]
    completion_ids: list[int]
    token_rewards: np.ndarray  # (T,) float64, the env's info["token_rewards"] cut to T
    score: float  # R


def collect_episodes(
    reward_mode: str, count: int, *, num_envs: int = 4, seed: int = 0, env_id: str = ENV, **kwargs
) -> list[Episode]:
    """``count`` episodes of ``gym.make_vec(env_id, num_envs, reward_mode=...)`` under random actions."""
    envs = gym.make_vec(env_id, num_envs, reward_mode=reward_mode, device="cpu", **{**LENGTHS, **kwargs})
    envs.action_space.seed(seed)
    episodes: list[Episode] = []
    try:
        envs.reset(seed=seed)
        while len(episodes) < count:
            _, _, terminated, truncated, info = envs.step(envs.action_space.sample())
            for i in np.flatnonzero(terminated | truncated):
                final = unpad_episode({k: v[i] for k, v in info["final_info"].items() if not k.startswith("_")})
                obs = info["final_obs"][i]
                completion = [int(t) for t in final["completion_ids"]]
                real = [int(t) for t, m in zip(obs["input_ids"], obs["attention_mask"]) if m]
                assert real[len(real) - len(completion) :] == completion  # the env's layout: [prompt | completion]
                episodes.append(
                    Episode(real[: len(real) - len(completion)], completion, final["token_rewards"], float(final["score"]))
                )
    finally:
        envs.close()
    return episodes[:count]


def verl_batch(
    episodes: list[Episode], pad_id: int, *, extra_prompt: int = 0, extra_response: int = 0
) -> dict[str, torch.Tensor]:
    """The tensors verl's rollout hands the reward: prompts left-padded, responses right-padded.

    Returns ``prompts`` ``(B, P)``, ``responses`` ``(B, R)``, ``input_ids`` ``(B, P + R)``,
    ``attention_mask`` ``(B, P + R)``, ``response_mask`` ``(B, R)``, ``position_ids`` ``(B, P + R)``;
    ``extra_prompt`` / ``extra_response`` widen the padding beyond the longest row.
    """
    b = len(episodes)
    p = max(len(e.prompt_ids) for e in episodes) + extra_prompt
    r = max(len(e.completion_ids) for e in episodes) + extra_response
    prompts = torch.full((b, p), pad_id, dtype=torch.long)
    responses = torch.full((b, r), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    response_mask = torch.zeros((b, r), dtype=torch.long)
    for i, e in enumerate(episodes):
        prompts[i, p - len(e.prompt_ids) :] = torch.tensor(e.prompt_ids)
        prompt_mask[i, p - len(e.prompt_ids) :] = 1
        responses[i, : len(e.completion_ids)] = torch.tensor(e.completion_ids)
        response_mask[i, : len(e.completion_ids)] = 1
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    return {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
    }
