"""Throughput of the agents' fast paths on the shipped model (abc_gym/Sentiment-v0's policy).

    python benchmarks/agent_throughput.py            # ~1-2 minutes on 2 CPU cores

Side by side, each measurement in a fresh process (so its peak RSS is its own):

1. rollout tokens/s (sampling + env steps, 16 envs) with the per-env KV cache vs a full
   forward over the whole prefix at every step, at 16 and 48 new tokens per episode;
2. update time on the same rollout buffer (16 episodes of 32 tokens, 4 epochs,
   minibatches of 4 episodes = 128 transitions): TokenPPO (one forward per episode) vs
   SB3's transition-level PPO.train (one prefix forward per transition).

``--policy gpt2-small`` runs the same rollout comparison with a GPT-2-small-shaped actor
(12 layers, width 768, random weights, on the shipped tokenizer; built locally, no
download), where attention over the prefix, not per-call overhead, dominates.

``--device cpu|cuda`` prints the fast-path tables instead (docs/performance.md), in one
process, medians of ``--repeats``: rollout tokens/s of the device-resident rollout, the
numpy rollout and HF ``generate`` + one reward-model batch at ``--sizes`` envs; KV-cache
rollout vs a full forward per step at ``--cache-sizes``; TokenPPO's update vs SB3's
PPO.train. GPU sizes: ``--sizes 16 64 256 1024 --cache-sizes 16 64 --update-policy same``.

``--device cpu|cuda --profile N`` prints where one rollout of N envs spends its time
instead (cProfile, cumulative seconds per phase, and torch.profiler's top operators),
beside one HF ``generate`` + RM batch on the same prompts.

Prints a markdown table. Completions have a fixed length (``min_new_tokens = max_new_tokens``,
EOS does not end them) so both sides generate the same number of tokens.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from typing import Any

ENV = "abc_gym/Sentiment-v0"


def gpt2_small_policy(path: str) -> str:
    """Save a random GPT-2-small-shaped causal LM on the shipped tokenizer to ``path``."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from abc_gym.tasks.sentiment import POLICY_PATH

    tok = AutoTokenizer.from_pretrained(POLICY_PATH)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=768, n_layer=12, n_head=12,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def gpt2_small_reward_model(path: str) -> str:
    """Save a random GPT-2-small-shaped 2-class reward model on the shipped tokenizer to ``path``."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from abc_gym.tasks.sentiment import POLICY_PATH

    tok = AutoTokenizer.from_pretrained(POLICY_PATH)
    torch.manual_seed(1)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=768, n_layer=12, n_head=12, num_labels=2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    GPT2ForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _setup(
    new_tokens: int, n_envs: int, seed: int = 0, policy: str | None = None, device: str = "cpu",
    reward_model: str | None = None, threads: int | None = 1,
):
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    from stable_baselines3.common.logger import configure

    from agents.algorithms import make_token_vec_env
    from agents.token_ppo import TokenPPO

    extra = {"reward_model": reward_model} if reward_model else {}
    env = make_token_vec_env(
        ENV, num_envs=n_envs, seed=seed, min_new_tokens=new_tokens, max_new_tokens=new_tokens, eos_ends_episode=False,
        device=device, **extra,
    )
    policy_kwargs = {"model_name_or_path": policy} if policy else None
    model = TokenPPO(
        "TransformerPolicy", env, learning_rate=1e-4, n_epochs=4, batch_size=4 * new_tokens, minibatch_episodes=4,
        seed=seed, device=device, policy_kwargs=policy_kwargs,
    )
    model.set_logger(configure(None, []))
    return model


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def job_rollout(new_tokens: int, use_cache: bool, n_envs: int, repeats: int, policy: str | None = None) -> dict[str, Any]:
    model = _setup(new_tokens, n_envs, policy=policy)
    model.policy.use_cache = use_cache
    model.collect_rollout()  # warm-up
    t = time.perf_counter()
    tokens = 0
    for _ in range(repeats):
        model.collect_rollout()
        tokens += model.rollout_buffer.n_valid
    dt = time.perf_counter() - t
    return {"tokens_per_s": tokens / dt, "seconds": dt, "peak_mb": _peak_mb()}


def job_update(new_tokens: int, sequence_level: bool, n_envs: int) -> dict[str, Any]:
    import torch
    from stable_baselines3 import PPO as SB3PPO

    model = _setup(new_tokens, n_envs)
    model.collect_rollout()
    torch.manual_seed(0)
    t = time.perf_counter()
    if sequence_level:
        model.update()
    else:
        SB3PPO.train(model)  # the transition-level update, on the same buffer
    dt = time.perf_counter() - t
    return {"seconds": dt, "transitions": model.rollout_buffer.n_valid, "peak_mb": _peak_mb()}


def job_baseline(new_tokens: int, n_envs: int) -> dict[str, Any]:
    _setup(new_tokens, n_envs)
    return {"peak_mb": _peak_mb()}


# ----------------------------------------------------------------------------- --device: the fast-path tables


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _interleaved(runs: dict[str, Any], repeats: int) -> dict[str, float]:
    """Median seconds of each zero-argument timer in ``runs``, after one warm-up each, the timers
    interleaved repeat by repeat (so load from other processes hits every variant alike)."""
    import statistics

    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


def rollout_timer(
    model, device_rollout: bool = True, use_cache: bool = True, compile_decode: bool = False, sampler: str | None = None
):
    """A timer of one TokenPPO rollout (n_steps=1: one complete episode per env); ``model.rollout_buffer.n_valid`` tokens.
    ``compile_decode`` and ``sampler``: the policy's fast options (set on the policy and its caches before each rollout)."""

    from agents.config import DEFAULTS

    sampler = DEFAULTS.sampler if sampler is None else sampler  # None: the package's default

    def once() -> float:
        model.device_rollout, model.policy.use_cache, model.policy.sampler = device_rollout, use_cache, sampler
        model.policy.set_compile_decode(compile_decode)
        _sync(model.device.type)
        t = time.perf_counter()
        model.collect_rollout()
        _sync(model.device.type)
        return time.perf_counter() - t

    return once


def generate_timer(model, new_tokens: int, with_ref: bool = False):
    """A timer of HF ``generate`` (sampling, KV cache, fixed length) on the env's prompts plus one
    reward-model batch with ABC attention over all completions: the baseline a rollout must beat.
    ``with_ref``: also the reference model's log-probs of the completions (one teacher-forced
    forward), which an RLHF rollout needs for its KL penalty and ``generate`` + RM does not do."""
    import torch

    from agents.kl import sequence_log_probs

    engine = model.env.episodes
    lm = model.policy.lm
    model.env.reset()
    n_real = engine.attention_mask.sum(-1)
    width = int(n_real.max())
    j = torch.arange(width, device=engine.device).unsqueeze(0)
    offset = (width - n_real).unsqueeze(1)
    left_mask = (j >= offset).long()
    left_ids = engine.input_ids.gather(1, (j - offset).clamp(min=0)) * left_mask + engine.pad_id * (1 - left_mask)
    left_ids, left_mask = left_ids.to(model.device), left_mask.to(model.device)

    def once() -> float:
        lm.eval()
        _sync(model.device.type)
        t = time.perf_counter()
        with torch.no_grad():
            out = lm.generate(
                input_ids=left_ids, attention_mask=left_mask, do_sample=True, top_k=0, top_p=1.0,
                max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=engine.pad_id,
            )
        mask = torch.cat([left_mask, torch.ones(len(out), out.shape[1] - width, dtype=torch.long, device=out.device)], 1)
        engine.reward_model.score(out.to(engine.device), mask.to(engine.device), with_attention=True)
        if with_ref:  # left padded: every completion starts at column `width`
            n = len(out)
            with torch.no_grad():
                sequence_log_probs(model.ref_model, out, mask, torch.full((n,), width, device=out.device),
                                   torch.full((n,), new_tokens, device=out.device))
        _sync(model.device.type)
        return time.perf_counter() - t

    return once


def time_update(model, sequence_level: bool) -> tuple[float, int]:
    """Seconds of one update (4 epochs) on a fresh rollout: TokenPPO's or SB3 PPO.train (per transition)."""
    import torch
    from stable_baselines3 import PPO as SB3PPO

    model.device_rollout = sequence_level  # SB3's per-transition update reads the stored observations
    model.collect_rollout()
    torch.manual_seed(0)
    _sync(model.device.type)
    t = time.perf_counter()
    if sequence_level:
        model.update()
    else:
        SB3PPO.train(model)
    _sync(model.device.type)
    return time.perf_counter() - t, model.rollout_buffer.n_valid


def _actor_and_rm(which: str) -> tuple[str | None, str | None]:
    """Local paths of the GPT-2-small-shaped actor and RM (``which == "gpt2-small"``), or Nones (shipped)."""
    import tempfile

    if which != "gpt2-small":
        return None, None
    return (gpt2_small_policy(tempfile.mkdtemp(prefix="abc_gym_gpt2_small_")),
            gpt2_small_reward_model(tempfile.mkdtemp(prefix="abc_gym_gpt2_small_rm_")))


def device_tables(args: argparse.Namespace) -> str:
    """The fast-path tables (docs/performance.md), on ``args.device``."""
    import torch

    policy, rm = _actor_and_rm(args.policy)
    dev, k = args.device, args.new_tokens
    threads = None if dev.startswith("cuda") else args.threads
    out = [
        f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.startswith('cuda') else 'cpu'}), torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads() if threads is None else threads}, actor and RM: {args.policy}, "
        f"{k} new tokens per episode, medians of {args.repeats} interleaved repeats (cache table: {args.cache_repeats})",
    ]
    rollout_header = [
        "",
        "| envs | device rollout tok/s | numpy rollout tok/s | HF generate + RM batch tok/s | generate + RM + ref log-probs tok/s "
        "| device / (generate + RM) | device / (generate + RM + ref) | device / numpy |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    out += rollout_header if args.sizes else []
    for n in args.sizes:
        model = _setup(k, n, policy=policy, device=dev, reward_model=rm, threads=threads)
        runs = {
            "device": rollout_timer(model, device_rollout=True),
            "generate": generate_timer(model, k),
            "generate_ref": generate_timer(model, k, with_ref=True),
        }
        if n <= args.numpy_max_envs:
            runs["numpy"] = rollout_timer(model, device_rollout=False)
        t = _interleaved(runs, args.repeats)
        tok = n * k  # fixed-length completions: every rollout stores n episodes of k tokens
        r_dev, r_gen, r_np = tok / t["device"], tok / t["generate"], tok / t.get("numpy", float("nan"))
        r_ref = tok / t["generate_ref"]
        out.append(
            f"| {n} | {r_dev:,.0f} | {r_np:,.0f} | {r_gen:,.0f} | {r_ref:,.0f} | {r_dev / r_gen:.2f}x "
            f"| {r_dev / r_ref:.2f}x | {r_dev / r_np:.2f}x |"
        )
        print(out[-1], flush=True)
        del model
    if args.compile_sizes:
        out += ["", options_table(args, policy, rm, threads)]
    out += [
        "",
        f"| envs ({args.policy} actor, shipped RM) | KV cache rollout tok/s | full forward per step tok/s | cache / full |",
        "|---:|---:|---:|---:|",
    ] if args.cache_sizes else []
    for n in args.cache_sizes:  # the shipped RM: scoring and the reference forward are the same on both sides
        model = _setup(k, n, policy=policy, device=dev, reward_model=None, threads=threads)
        t = _interleaved({"cache": rollout_timer(model, use_cache=True), "full": rollout_timer(model, use_cache=False)},
                         args.cache_repeats)
        tok = n * k
        out.append(f"| {n} | {tok / t['cache']:,.0f} | {tok / t['full']:,.0f} | {t['full'] / t['cache']:.2f}x |")
        print(out[-1], flush=True)
        del model
    if args.no_update:
        return "\n".join(out)
    out += [
        "",
        "| update (4 epochs, minibatches of 4 episodes) | transitions | SB3 PPO.train s | TokenPPO s | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    model = _setup(args.update_tokens, args.update_envs, policy=policy if args.update_policy == "same" else None,
                   device=dev, reward_model=rm if args.update_policy == "same" else None, threads=threads)
    time_update(model, True)  # warm-up
    seq, n_tr = time_update(model, True)
    per, _ = time_update(model, False)
    actor = args.policy if args.update_policy == "same" else "shipped"
    out.append(f"| {args.update_envs} episodes x {args.update_tokens} tokens, {actor} actor | {n_tr} | {per:.2f} | {seq:.2f} | {per / seq:.1f}x |")
    print(out[-1], flush=True)
    return "\n".join(out)


#: the opt-in fast options of the options table: (column, policy settings)
OPTIONS = (  # "eager" is the defaults before 2026-11-29 (multinomial sampler); "inverse_cdf" today's
    ("eager", {"sampler": "multinomial"}),
    ("compile_decode", {"compile_decode": True, "sampler": "multinomial"}),
    ("inverse_cdf", {"sampler": "inverse_cdf"}),
    ("both", {"compile_decode": True, "sampler": "inverse_cdf"}),
)


def options_table(args: argparse.Namespace, policy: str | None, rm: str | None, threads: int | None) -> str:
    """Device rollout tok/s with the opt-in fast options (``compile_decode``, ``sampler="inverse_cdf"``,
    both) vs the defaults vs ``generate`` + RM, at ``args.compile_sizes`` envs. The first
    compiled rollout (compilation included) is timed on its own; a failed compilation is reported
    in the table instead of ending the benchmark."""
    mode = "reduce-overhead, CUDA graphs" if args.device.startswith("cuda") else "default"
    k = args.new_tokens
    cols = " | ".join(f"{name} tok/s" for name, _ in OPTIONS)
    out = [
        f"| envs (compile mode: {mode}) | {cols} | HF generate + RM tok/s | best / eager | best / (generate + RM) "
        "| best / (generate + RM + ref) | first compiled rollout s |",
        "|---:|" + "---:|" * (len(OPTIONS) + 5),
    ]
    for n in args.compile_sizes:
        model = _setup(k, n, policy=policy, device=args.device, reward_model=rm, threads=threads)
        runs = {name: rollout_timer(model, **opts) for name, opts in OPTIONS}
        try:  # compiles first, so the cache buffers it allocates are the ones CUDA graphs keep
            first = runs["compile_decode"]()
        except Exception as err:  # noqa: BLE001 - the table says what failed; the other tables still run
            out.append(f"| {n} | compile failed: {type(err).__name__}: {str(err).splitlines()[0][:200]} |")
            print(out[-1], flush=True)
            runs = {name: fn for name, fn in runs.items() if "compile_decode" not in dict(OPTIONS)[name]}
            first = float("nan")
        t = _interleaved({**runs, "generate": generate_timer(model, k), "generate_ref": generate_timer(model, k, with_ref=True)},
                         args.repeats)
        tok = n * k
        best = min(t[name] for name in runs)
        rates = " | ".join(f"{tok / t[name]:,.0f}" if name in t else "failed" for name, _ in OPTIONS)
        out.append(
            f"| {n} | {rates} | {tok / t['generate']:,.0f} | {t['eager'] / best:.2f}x | {t['generate'] / best:.2f}x "
            f"| {t['generate_ref'] / best:.2f}x | {first:.1f} |"
        )
        print(out[-1], flush=True)
        del model
    return "\n".join(out)


# (phase, file suffix, function): cumulative cProfile time of that function is the phase's time
PHASES = (
    ("policy forward (all steps)", "agents/policy.py", "forward"),
    ("  trunk with KV cache", "agents/kv_cache.py", "last_hidden"),
    ("  sampling (torch.multinomial)", "torch/distributions/categorical.py", "sample"),
    ("env steps (all)", "abc_gym/core.py", "step_autoreset"),
    ("  scoring finished rows", "abc_gym/core.py", "score_rows"),
    ("    reward-model forward", "abc_gym/reward_model.py", "score"),
    ("    gold score (VADER, per episode)", "abc_gym/tasks/sentiment/gold.py", "gold_score"),
    ("credit write-back, KL and buffer (episodes end)", "agents/credit_mixin.py", "finish_episodes"),
    ("  reference log-probs (one teacher-forced forward)", "agents/kl.py", "sequence_log_probs"),
)


def profile_phases(sampler: str = "inverse_cdf") -> list[tuple[str, str, str]]:
    """:data:`PHASES`, with the sampling row of ``sampler`` (the inverse-CDF sampler is its own function)."""
    phases = list(PHASES)
    if sampler == "inverse_cdf":
        phases[2] = ("  sampling (inverse CDF)", "agents/sampling.py", "inverse_cdf_sample")
    return phases


def profile_tables(args: argparse.Namespace) -> str:
    """One rollout of ``args.profile`` envs under cProfile (phases) and torch.profiler (operators)."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile

    policy, rm = _actor_and_rm(args.policy)
    dev, k, n = args.device, args.new_tokens, args.profile
    model = _setup(k, n, policy=policy, device=dev, reward_model=rm, threads=None if dev.startswith("cuda") else args.threads)
    options = dict(OPTIONS)["both"] if getattr(args, "profile_options", False) else {}
    rollout, generate = rollout_timer(model, **options), generate_timer(model, k)
    t = _interleaved({"rollout": rollout, "generate": generate}, args.repeats)
    prof = cProfile.Profile()
    prof.enable()
    total = rollout()
    prof.disable()
    stats = pstats.Stats(prof).stats
    out = [
        f"device {dev}, actor and RM: {args.policy}, {n} envs x {k} new tokens, "
        f"options {options or 'none (defaults)'}; medians of {args.repeats}: "
        f"rollout {t['rollout']:.3f} s, HF generate + RM batch {t['generate']:.3f} s "
        f"({t['generate'] / t['rollout']:.2f}x); profiled rollout {total:.3f} s (cProfile adds overhead)",
        "",
        "| phase of one rollout (indented: part of the row above) | cumulative ms | share |",
        "|---|---:|---:|",
    ]
    from agents.config import DEFAULTS

    for label, suffix, func in profile_phases(options.get("sampler", DEFAULTS.sampler)):
        hits = [v[3] for (file, _, name), v in stats.items() if name == func and file.endswith(suffix)]
        if not hits:  # a renamed function must not read as a phase that costs nothing
            raise RuntimeError(f"profile: no call of {func}() in a file ending {suffix}; update PHASES")
        ms = sum(hits) * 1e3
        out.append(f"| {label} | {ms:.1f} | {sum(hits) / total:.0%} |" if ms >= 1 else f"| {label} | {ms:.3f} | <1% |")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    with profile(activities=activities) as torch_prof:
        rollout()
    key = "self_cuda_time_total" if dev.startswith("cuda") else "self_cpu_time_total"
    out += ["", "torch.profiler, one rollout, top operators by " + key.replace("_", " ") + ":", "", "```",
            torch_prof.key_averages().table(sort_by=key, row_limit=15), "```"]
    del model
    return "\n".join(out)


def _run(fn, *args) -> dict[str, Any]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="rollouts timed per setting")
    p.add_argument("--rollout-tokens", type=int, nargs="+", default=[16, 48])
    p.add_argument("--update-tokens", type=int, default=32)
    p.add_argument("--policy", choices=["shipped", "gpt2-small"], default="shipped", help="actor for the rollout rows")
    p.add_argument("--device", default=None, help="print the fast-path tables on this device (cpu, cuda) instead")
    p.add_argument("--sizes", type=int, nargs="*", default=[16, 64], help="--device: envs of the rollout table")
    p.add_argument("--cache-sizes", type=int, nargs="*", default=[16], help="--device: envs of the cache table")
    p.add_argument("--compile-sizes", type=int, nargs="*", default=[],
                   help="--device: envs of the fast-options table (compile_decode, sampler=inverse_cdf, both vs the "
                        "defaults; none: no table)")
    p.add_argument("--new-tokens", type=int, default=48, help="--device: new tokens per episode")
    p.add_argument("--numpy-max-envs", type=int, default=64, help="--device: largest N timed on the numpy path")
    p.add_argument("--cache-repeats", type=int, default=1, help="--device: repeats of the cache table (full forward is slow)")
    p.add_argument("--update-envs", type=int, default=16, help="--device: episodes of the update row")
    p.add_argument("--no-update", action="store_true", help="--device: skip the update table")
    p.add_argument("--profile-options", action="store_true",
                   help="--profile: profile with the opt-in fast options on (compile_decode, sampler=inverse_cdf)")
    p.add_argument("--update-policy", choices=["same", "shipped"], default="shipped",
                   help="--device: update row on the --policy actor (same) or the shipped one")
    p.add_argument("--threads", type=int, default=1, help="--device on CPU: torch threads")
    p.add_argument("--profile", type=int, default=None, metavar="N",
                   help="--device: profile one rollout of N envs (phases and operators) instead of the tables")
    args = p.parse_args()
    if args.device is not None:
        if args.device == "auto":
            import torch

            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        print(profile_tables(args) if args.profile else device_tables(args))
        return
    policy = None
    if args.policy == "gpt2-small":
        import tempfile

        policy = gpt2_small_policy(tempfile.mkdtemp(prefix="abc_gym_gpt2_small_"))

    rows = ["| measurement | setting | baseline | fast path | speed-up |", "|---|---|---|---|---|"]
    for k in args.rollout_tokens:
        full = _run(job_rollout, k, False, args.envs, args.repeats, policy)
        cached = _run(job_rollout, k, True, args.envs, args.repeats, policy)
        rows.append(
            f"| rollout tokens/s ({args.envs} envs, {args.policy} actor) | {k} new tokens | full forward {full['tokens_per_s']:.0f} tok/s "
            f"(peak {full['peak_mb']:.0f} MB) | KV cache {cached['tokens_per_s']:.0f} tok/s (peak {cached['peak_mb']:.0f} MB) "
            f"| {cached['tokens_per_s'] / full['tokens_per_s']:.1f}x |"
        )
        print(rows[-1], flush=True)
    if args.policy != "shipped":
        print("\n".join(rows))
        return
    k = args.update_tokens
    base = _run(job_baseline, k, args.envs)
    per = _run(job_update, k, False, args.envs)
    seq = _run(job_update, k, True, args.envs)
    rows.append(
        f"| update time, 4 epochs ({per['transitions']} transitions) | {k} new tokens | SB3 PPO.train {per['seconds']:.2f} s "
        f"(peak {per['peak_mb']:.0f} MB) | TokenPPO {seq['seconds']:.2f} s (peak {seq['peak_mb']:.0f} MB) "
        f"| {per['seconds'] / seq['seconds']:.1f}x |"
    )
    rows.append(f"| process after setup (model, env, buffer) | {k} new tokens | peak {base['peak_mb']:.0f} MB | | |")
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
