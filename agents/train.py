"""Train a token policy with credit-aware RL: ``python -m agents.train --help``.

Python API (used by the benchmarks)::

    from agents.train import TrainConfig, train
    metrics = train(TrainConfig(reward_mode="sparse", n_updates=20, log_dir=None, progress=False))

``train`` returns one dict per update (the JSON lines of ``metrics.jsonl``): update,
timesteps, episodes, rm_score (mean RM score of the episodes finished in that rollout),
gold_score, kl, kl_coef, value_loss, entropy, policy_loss, wall_time, and a few more.

Defaults: the paper's where it has one (batch 16 completions per update, gamma 1,
GAE lambda 0.95, clip 0.2, value clip 0.2, vf_coef 0.1, 4 epochs, KL 0.2 adaptive to
target 6 over horizon 10000, pure sampling). Two departures, for the small embedded
model on a 2-core CPU: ``lr`` 1e-4 (the paper's 1.41e-5 is for 124M-parameter GPT-2;
on the 0.9M-parameter embedded model it barely moves in a few minutes) and
minibatches of 4 completions (the paper's trl uses 1; 4 keeps an update cheap).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALGOS = ("ppo", "a2c", "trpo", "maskable_ppo", "token_ppo")


@dataclass
class TrainConfig:
    """Every hyperparameter of a run (each is a CLI flag: ``--episodes-per-update`` etc.)."""

    env_id: str = "abc_gym/Sentiment-v0"
    algo: str = "token_ppo"
    reward_mode: str = "abc"
    beta: float = 0.8
    seed: int = 0
    n_updates: int = 60  # rollouts + updates; ignored when steps is set
    steps: int | None = None  # env timesteps instead of n_updates (SB3's total_timesteps)
    episodes_per_update: int = 16  # completions per rollout (= parallel envs, one episode each)
    lr: float = 1e-4
    n_epochs: int = 4
    minibatch_episodes: int = 4  # PPO-style minibatch, in completions
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float | None = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    kl_coef: float = 0.2
    adaptive_kl: bool = True
    kl_target: float = 6.0
    kl_horizon: float = 10000.0
    top_k: int = 50  # maskable_ppo: NLPO mask from the reference policy (0 = off)
    top_p: float = 0.95
    trpo_target_kl: float = 0.01
    trpo_cg_max_steps: int = 10
    model: str | None = None  # actor model; None = the env's own policy model
    separate_value_model: bool | None = None  # None: shared trunk, except TRPO (separate)
    device: str = "cpu"
    threads: int = 1  # torch threads; 1 is fastest for the small model on a small CPU
    log_dir: str | None = "runs"  # None = no files (no TensorBoard, no JSONL, no model)
    save_path: str | None = None  # default: <log_dir>/<run>/model.zip
    run_name: str | None = None
    progress: bool = True
    quiet: bool = False

    def validate(self) -> None:
        from abc_gym.credit import check_beta, check_reward_mode

        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}: use one of {', '.join(ALGOS)}")
        check_reward_mode(self.reward_mode)
        check_beta(self.beta)
        if self.episodes_per_update < 1:
            raise ValueError(f"episodes_per_update must be >= 1, got {self.episodes_per_update}")
        if not (1 <= self.minibatch_episodes <= self.episodes_per_update):
            raise ValueError(
                f"minibatch_episodes={self.minibatch_episodes} cannot be drawn from {self.episodes_per_update} "
                "episodes per update: use 1 <= --minibatch-episodes <= --episodes-per-update"
            )
        if self.steps is None and self.n_updates < 1:
            raise ValueError(f"n_updates must be >= 1, got {self.n_updates}")
        if self.steps is not None and self.steps < self.episodes_per_update:
            raise ValueError(f"steps={self.steps} is less than one env step per episode: raise --steps")


def build_model(cfg: TrainConfig, tensorboard_log: str | None = None):
    """The algorithm of ``cfg`` on a batched env of ``episodes_per_update`` rows (one episode each)."""
    from agents.algorithms import ALGORITHMS, make_token_vec_env
    from agents.token_ppo import TokenPPO

    cfg.validate()
    env = make_token_vec_env(
        cfg.env_id, num_envs=cfg.episodes_per_update, reward_mode=cfg.reward_mode, beta=cfg.beta, device=cfg.device, seed=cfg.seed
    )
    policy_kwargs: dict[str, Any] = {}
    if cfg.model is not None:
        policy_kwargs["model_name_or_path"] = cfg.model
    if cfg.separate_value_model is not None:
        policy_kwargs["separate_value_model"] = cfg.separate_value_model
    # Mean completion length of the embedded tasks is ~ (min + max) / 2; SB3 minibatches count transitions.
    mean_len = _mean_len(env)
    common = dict(
        learning_rate=cfg.lr, n_steps=1, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, kl_coef=cfg.kl_coef,
        adaptive_kl=cfg.adaptive_kl, kl_target=cfg.kl_target, kl_horizon=cfg.kl_horizon, policy_kwargs=policy_kwargs,
        seed=cfg.seed, device=cfg.device, tensorboard_log=tensorboard_log, verbose=0,
    )
    ppo_like = dict(
        n_epochs=cfg.n_epochs, batch_size=max(2, round(cfg.minibatch_episodes * mean_len)), clip_range=cfg.clip_range,
        clip_range_vf=cfg.clip_range_vf, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
        normalize_advantage=cfg.normalize_advantage,
    )
    if cfg.algo == "token_ppo":
        return TokenPPO("TransformerPolicy", env, minibatch_episodes=cfg.minibatch_episodes, **common, **ppo_like)
    cls = ALGORITHMS[cfg.algo]
    if cfg.algo == "ppo":
        return cls("TransformerPolicy", env, **common, **ppo_like)
    if cfg.algo == "maskable_ppo":
        return cls("TransformerPolicy", env, top_k=cfg.top_k, top_p=cfg.top_p, **common, **ppo_like)
    if cfg.algo == "a2c":
        return cls(
            "TransformerPolicy", env, vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
            normalize_advantage=cfg.normalize_advantage, **common,
        )
    return cls(  # trpo
        "TransformerPolicy", env, batch_size=ppo_like["batch_size"], target_kl=cfg.trpo_target_kl,
        cg_max_steps=cfg.trpo_cg_max_steps, normalize_advantage=cfg.normalize_advantage, **common,
    )


def _mean_len(env: Any) -> float:
    try:
        lo, hi = env.get_attr("min_new_tokens")[0], env.get_attr("max_new_tokens")[0]
        return (lo + hi) / 2.0
    except AttributeError:
        return 10.0


def train(config: TrainConfig) -> list[dict[str, Any]]:
    """Run one training run; returns the per-update metric dicts (same keys as ``metrics.jsonl``)."""
    import torch
    import transformers
    from stable_baselines3.common.logger import configure

    cfg = config
    cfg.validate()
    torch.set_num_threads(max(1, cfg.threads))
    transformers.utils.logging.disable_progress_bar()
    run_dir = None
    if cfg.log_dir is not None:
        name = cfg.run_name or f"{cfg.algo}_{cfg.reward_mode}_seed{cfg.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(cfg.log_dir) / name
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    model = build_model(cfg)
    formats = (["stdout"] if not cfg.quiet and not cfg.progress else []) + (["tensorboard", "csv"] if run_dir else [])
    model.set_logger(configure(str(run_dir) if run_dir else None, formats))

    jsonl = open(run_dir / "metrics.jsonl", "w") if run_dir else None
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.n_updates if cfg.steps is None else None, desc=f"{cfg.algo}/{cfg.reward_mode}", unit="update")

    def on_update(m: dict[str, Any]) -> None:
        if jsonl is not None:
            jsonl.write(json.dumps(m) + "\n")
            jsonl.flush()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(rm=f"{m['rm_score']:.3f}", kl=f"{m['kl']:.2f}", vloss=f"{(m['value_loss'] or 0):.3f}")

    model.on_update = on_update
    try:
        if cfg.steps is None:
            model.max_updates = cfg.n_updates
            model.learn(total_timesteps=2**62)
        else:
            model.learn(total_timesteps=cfg.steps)
    finally:
        if bar is not None:
            bar.close()
        if jsonl is not None:
            jsonl.close()
    save_path = cfg.save_path or (str(run_dir / "model.zip") if run_dir else None)
    if save_path:
        model.save(save_path)
        model.policy.save_pretrained(os.path.splitext(save_path)[0] + "_hf")
    if not cfg.quiet and model.update_metrics:
        first, last = model.update_metrics[0], model.update_metrics[-1]
        print(
            f"{cfg.algo} {cfg.reward_mode}: {len(model.update_metrics)} updates, rm_score {first['rm_score']:.3f} -> "
            f"{last['rm_score']:.3f}, wall {last['wall_time']:.0f}s" + (f", saved {save_path}" if save_path else "")
        )
    return list(model.update_metrics)


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agents.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "env_id":
            flag = "--env"
        if isinstance(default, bool) or f.type in ("bool", "bool | None"):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default)
        elif f.name in ("algo",):
            p.add_argument(flag, dest=f.name, default=default, choices=ALGOS)
        else:
            conv = _converter(f.type)
            p.add_argument(flag, dest=f.name, type=conv, default=default, help=f"default: {default}")
    return p


def _converter(type_name: Any):
    t = str(type_name)
    base = t.split("|")[0].strip()
    fn = {"int": int, "float": float, "str": str}.get(base, str)
    if "None" in t:
        return lambda s: None if s.lower() == "none" else fn(s)
    return fn


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    cfg = TrainConfig(**vars(args))
    try:
        cfg.validate()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    train(cfg)


if __name__ == "__main__":
    main()
