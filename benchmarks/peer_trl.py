"""TRL's PPO and TokenPPO side by side, in one process, interleaved (issue 18).

    python benchmarks/peer_trl.py                                  # CPU: 64 completions x 48 tokens, 5 repeats
    python benchmarks/peer_trl.py --device cuda --completions 64 256
    python benchmarks/peer_trl.py --skip-trl                        # TokenPPO and the floor only (no TRL needed)
    python benchmarks/peer_trl.py --repeats 9 --json peer.json      # also every repeat's seconds, as JSON
    python benchmarks/peer_trl.py --gold                            # TokenPPO's env with its VADER gold diagnostics
    python benchmarks/peer_trl.py --no-variant                      # without the row of TokenPPO with other switches
    python benchmarks/peer_trl.py --no-trl-alone                    # without TRL's first, TRL-only measurement

On the shipped policy and reward model (``abc_gym.tasks.sentiment``: ``POLICY_PATH``,
``REWARD_MODEL_PATH``) and at one set of PPO settings on both sides (``--completions`` x 48 new
tokens, 1 epoch, one minibatch of all completions, lr 1e-4, fixed per-token KL 0.2, gamma 1,
lambda 0.95, a separate value trunk, float32, 1 torch thread on a CPU), it times:

- **TRL PPO**: ``trl.experimental.ppo.PPOTrainer`` of TRL 1.12 (the last release with PPO; it was
  removed in 1.13), driven by its own ``train()`` loop. One update is one iteration of that loop
  (prompts, ``generate``, reference / value / RM forwards, GAE, the PPO step, metrics, ``gc``):
  the interval between two consecutive ``on_step_end`` callbacks. The TokenPPO timers run inside
  that callback, outside the interval, so every repeat is TRL, TokenPPO abc, TokenPPO sparse,
  floor, TRL, ... (load from other processes hits every variant alike).
- **TokenPPO** (``agents.token_ppo``) in ``abc`` and ``sparse`` credit mode: one update is
  ``model.collect_rollout()`` + ``model.update()``, each timed (the rollout / update split).
- **TokenPPO abc, variant** (``abc_variant``): the same with other speed switches
  (:func:`variant_options`): on a CPU ``fused_activation=False``, transformers' Python GELU as TRL
  runs it (the default before 2026-11-30: what the fused kernel buys, and the comparison with the
  same activation code on both sides); on CUDA the opt-in compiled decode step (CUDA graphs; its
  first, warm-up repeat compiles).
- **the floor** of an RLHF rollout on this hardware: HF ``generate`` (sampling, KV cache, fixed
  length) + one reward-model batch + the reference model's log-probs of the completions, on the
  same prompts (``benchmarks.agent_throughput.generate_timer(..., with_ref=True)``).

Each figure is the median over ``--repeats`` interleaved repeats after one warm-up of each.
Prints markdown tables and the settings that could not be made equal (:data:`UNEQUAL`). TRL's
update is also split into its ``generate`` (``batch_generation``), its two ``gc.collect()`` calls
(which walk every Python object of the process, so they grow with what else the process holds)
and the rest. So that this does not flatter TokenPPO, TRL's update is first also measured alone
(:func:`trl_alone`: before any TokenPPO model, env or floor exists in the process; not
interleaved), and its ratio to TokenPPO's interleaved medians is printed beside the paired one.

TRL 1.12 is not a dependency of abc_gym; install it in its own venv (torch pinned to the one
you run the project with)::

    python -m venv venv_trl && echo "torch==2.13.0" > constraints.txt
    venv_trl/bin/pip install -c constraints.txt torch==2.13.0 -e ".[agents]" "trl>=1.12,<1.13"
    venv_trl/bin/python benchmarks/peer_trl.py
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.agent_throughput import _sync, generate_timer

#: TRL releases with ``trl.experimental.ppo.PPOTrainer`` that this script drives.
TRL_SPEC = ">=1.12,<1.13"
INSTALL = f'pip install -c constraints.txt torch==<your torch> -e ".[agents]" "trl{TRL_SPEC}" (in its own venv; see benchmarks/peer_trl.py)'

#: Settings that could not be made equal between TRL PPO and TokenPPO (printed with the tables).
UNEQUAL = (
    "reward model: TRL reads one output per sequence, so it gets a copy of the 2-class RM whose 1-output head "
    "has weight w_pos - w_neg (R = logit_pos - logit_neg, as the env's; checked equal at setup)",
    "EOS: TRL samples EOS freely and keeps generating (stop_token=None, no EOS stop in its generation config: "
    "always N new tokens); TokenPPO masks EOS for fixed-length completions. A sampled pad id ends a TRL response "
    "for its RM, value and loss masks",
    "prompts: TRL draws them by a shuffled DataLoader (drop_last) over the shipped prompts, left-padded to the "
    "longest in the batch; TokenPPO's env rows draw them from per-row numpy generators and pad to the longest "
    "shipped prompt",
    "value loss: TRL 0.5 * max(unclipped, clipped) squared error; SB3 / TokenPPO MSE on the clipped value",
    "optimiser: TRL AdamW (transformers' default optim, adamw_torch_fused in 5.x: eps 1e-8, weight decay 0) and no "
    "gradient clipping; TokenPPO Adam (SB3's, eps 1e-5) with the gradient norm clipped at 0.5",
    "value head: TRL's value model is the policy's trunk (a copy) under a fresh 1-output head; TokenPPO's separate "
    "value trunk is also a copy of the policy's, under its own head (different initialisation)",
    "TRL runs gc.collect() twice per update (after the rollout and at its end; timed in its own column), which "
    "walks every Python object of the process, TokenPPO's models, envs and imports included (a TRL-only process "
    "has fewer); TokenPPO runs none",
    "TRL computes ~20 logged metrics per update (each a .item()); here its printer callback is removed (nothing "
    "printed) but the metrics are still computed",
    "TRL computes the rollout's log-probs from generate's scores and the values with one value forward after "
    "generation; TokenPPO gets its log-probs per step from its KV-cache decode and, at these settings (one "
    "minibatch of every completion), its values from the update's first forward of the value trunk (no value "
    "forward in the rollout)",
    "the abc env also computes the RM's attention row (its credit)",
    "sampling: both draw from the full softmax (top_k 0, top_p 1); TRL divides logits by temperature 1 + 1e-7; the "
    "random streams differ, so the completions differ",
    "CUDA: TRL calls the device's empty_cache() several times per update (a no-op on a CPU); TokenPPO does not",
    "activation: TokenPPO runs GPT-2's tanh GELU on torch's fused kernel (its default fused_activation, in the "
    "policy, value trunk and reference; equal within float rounding), TRL transformers' gelu_new (eight tensor "
    "expressions in Python; a TRL user could swap it too); the CPU row 'abc, fused_activation=False' is TokenPPO "
    "with TRL's activation code. The floor runs the abc row's policy and reference modules as they are (fused)",
)

#: What a TokenPPO rollout does that the floor (generate + RM + reference forward) does not.
FLOOR_NOTE = (
    "floor vs rollout: the rollout also does the credit and KL write-back (its values come from the update's "
    "first forward at these settings); the floor's RM batch takes the ABC attention row in both rows of the table"
)


def gold_note(gold: bool) -> str:
    """The line that says whether TokenPPO's env computed the VADER gold diagnostics."""
    if gold:
        return ("--gold: TokenPPO's env also computes the VADER gold score of every completion (the registered env's "
                "default; a diagnostic TRL does not compute)")
    return ("TokenPPO's env is built with gold_scorer=None (no VADER gold score: TRL computes none and neither mode "
            "trains on it); the registered env computes it by default (--gold times that)")


class TrlMissing(RuntimeError):
    """TRL is not installed, or is a release without ``trl.experimental.ppo.PPOTrainer``."""


def load_trl() -> tuple[str, Any, Any]:
    """``(version, PPOConfig, PPOTrainer)`` of the installed TRL; :class:`TrlMissing` with the install command otherwise."""
    try:
        import trl
    except ImportError:
        raise TrlMissing(f"TRL is not installed; install TRL 1.12 (the last release with PPO): {INSTALL}") from None
    version = getattr(trl, "__version__", "?")
    try:
        with warnings.catch_warnings():  # "trl.experimental is unstable": this script pins the release
            warnings.filterwarnings("ignore", message=".*trl.experimental.*")
            from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError as err:
        if (getattr(err, "name", None) or "").startswith("trl"):  # the module is not in this release
            raise TrlMissing(f"TRL {version} has no trl.experimental.ppo.PPOTrainer; install TRL 1.12: {INSTALL}") from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TrlMissing(  # a dependency of TRL's (datasets, pyarrow, ...) does not import
            f"TRL {version}'s PPO does not import here ({reason}): fix that dependency, or install TRL 1.12 in its own "
            f"venv: {INSTALL}"
        ) from None
    return version, PPOConfig, PPOTrainer


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` inside the block (``None``: unchanged), restored after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """transformers' progress bars (weight loading) off inside the block, as they were after."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


# ----------------------------------------------------------------------------- TokenPPO and the floor


def token_ppo(reward_mode: str, completions: int, new_tokens: int, device: str, seed: int = 0, gold: bool = False,
              options: dict[str, bool] | None = None):
    """TokenPPO at the peer settings (module doc) on the shipped task, built as ``agents.training`` builds it.

    ``gold``: keep the task's VADER gold diagnostics (score of every completion; the registered env's
    default). Off, the env is built with ``gold_scorer=None`` (TRL computes no gold score; neither
    mode here trains on it). ``options``: TrainConfig switches on top (the variant row: :func:`variant_options`)."""
    from stable_baselines3.common.logger import configure

    from agents.training import TrainConfig, build_model

    cfg = TrainConfig(
        algo="token_ppo", reward_mode=reward_mode, seed=seed, episodes_per_update=completions, n_updates=10**6,
        lr=1e-4, n_epochs=1, minibatch_episodes=completions, gamma=1.0, gae_lambda=0.95, kl_coef=0.2,
        adaptive_kl=False, separate_value_model=True, device=device, log_dir=None, progress=False, quiet=True,
        env_kwargs={"min_new_tokens": new_tokens, "max_new_tokens": new_tokens, "eos_ends_episode": False,
                    **({} if gold else {"gold_scorer": None})},
        **(options or {}),
    )
    model = build_model(cfg)
    model.set_logger(configure(None, []))
    return model


def iteration_timer(model) -> Callable[[], dict[str, float]]:
    """One TokenPPO update as TRL counts one: a rollout then the PPO update; seconds of each and their sum."""

    def once() -> dict[str, float]:
        dev = model.device.type
        _sync(dev)
        t0 = time.perf_counter()
        model.collect_rollout()
        _sync(dev)
        t1 = time.perf_counter()
        model.update()
        _sync(dev)
        t2 = time.perf_counter()
        return {"rollout": t1 - t0, "update": t2 - t1, "total": t2 - t0}

    return once


def variant_options(device: str) -> dict[str, bool]:
    """TrainConfig switches of the ``abc_variant`` row. On a CPU ``fused_activation=False``: TokenPPO with
    transformers' Python GELU, the activation code TRL runs (and TokenPPO's default before 2026-11-30).
    On CUDA ``compile_decode=True``, the opt-in compiled decode step with CUDA graphs (off by default: it
    changes seeded numbers within float rounding). Not compiled on a CPU: torch.compile needs a C++
    compiler there and ~20 s per process, and in the two peer runs with an inductor-compiled step in the
    process TRL's eager update took 3.30 and 3.56 s against 2.72-3.27 s in seven runs without (not resolved
    at 5 repeats; docs/performance.md), so it could flatter the one-process ratio."""
    return {"compile_decode": True} if device.startswith("cuda") else {"fused_activation": False}


def options_label(options: dict[str, bool]) -> str:
    """``"fused_activation=False"``: the switches and their values."""
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "none"


def our_timers(completions: int, new_tokens: int, device: str, seed: int = 0, gold: bool = False,
               variant: dict[str, bool] | None = None) -> dict[str, Callable[[], dict[str, float]]]:
    """The TokenPPO (abc, sparse; abc_variant with the ``variant`` switches) and floor timers, each returning named
    seconds (``total`` among them). The first round is the warm-up (a compiled decode compiles there)."""
    abc = token_ppo("abc", completions, new_tokens, device, seed, gold)
    sparse = token_ppo("sparse", completions, new_tokens, device, seed, gold)
    floor = generate_timer(abc, new_tokens, with_ref=True)  # resets abc's env: before its first rollout
    timers = {
        "abc": iteration_timer(abc),
        "sparse": iteration_timer(sparse),
        "floor": lambda: {"total": floor()},
    }
    if variant:
        timers["abc_variant"] = iteration_timer(token_ppo("abc", completions, new_tokens, device, seed, gold, variant))
    return timers


class Recorder:
    """Per-repeat seconds of every timer; the first round of each (the warm-up) is not kept."""

    def __init__(self, timers: dict[str, Callable[[], dict[str, float]]]) -> None:
        self.timers = timers
        self.times: dict[str, list[float]] = {}
        self.rounds = 0

    def add(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def round(self) -> None:
        """Run every timer once (the first call: the warm-up, nothing kept)."""
        for name, fn in self.timers.items():
            parts = fn()
            if self.rounds:
                for part, s in parts.items():
                    self.add(name if part == "total" else f"{name}.{part}", s)
        self.rounds += 1

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.times.items()}


# ----------------------------------------------------------------------------- TRL


def _positive_index(config: Any) -> int:
    """The positive class of a 2-class RM: the label whose name starts with "pos", else 1 (abc_gym's rule)."""
    label2id = {k.lower(): v for k, v in (config.label2id or {}).items()}
    return next((v for k, v in label2id.items() if k.startswith("pos")), 1)


def one_output_reward_model(path: str):
    """A copy of the 2-class sequence classifier at ``path`` with one output, head weight ``w_pos - w_neg``,
    so its score equals the env's ``R = logit_pos - logit_neg``."""
    import copy

    import torch
    from transformers import AutoModelForSequenceClassification

    rm2 = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
    pos = _positive_index(rm2.config)
    neg = 1 - pos
    if rm2.config.num_labels != 2 or getattr(rm2.score, "bias", None) is not None:
        raise ValueError(f"{path}: expected a 2-output score head without bias, got {rm2.score}")
    cfg = copy.deepcopy(rm2.config)
    cfg.num_labels, cfg.id2label, cfg.label2id = 1, {0: "REWARD"}, {"REWARD": 0}
    rm1 = type(rm2)(cfg)
    state = {k: v for k, v in rm2.state_dict().items() if not k.startswith("score.")}
    missing, unexpected = rm1.load_state_dict(state, strict=False)
    if unexpected or missing != ["score.weight"]:
        raise RuntimeError(f"1-output RM copy: missing {missing}, unexpected {unexpected} (expected only score.weight)")
    with torch.no_grad():
        rm1.score.weight.copy_(rm2.score.weight[pos] - rm2.score.weight[neg])
    return rm1.eval(), rm2.eval()


def check_equal_reward(rm1, rm2, tokenizer) -> float:
    """Largest ``|R_1 - (logit_pos - logit_neg)|`` over a few shipped prompts (raises past 1e-4)."""
    import torch

    from abc_gym.tasks.sentiment import load_prompts

    pos = _positive_index(rm2.config)
    batch = tokenizer(load_prompts()[:8], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        r1 = rm1(**batch).logits[:, 0]
        l2 = rm2(**batch).logits
    gap = float((r1 - (l2[:, pos] - l2[:, 1 - pos])).abs().max())
    if gap > 1e-4:
        raise RuntimeError(f"the 1-output RM copy differs from the 2-class RM by {gap:.2e}")
    return gap


def trl_models(tok) -> tuple[Any, Any, Any, Any]:
    """TRL's four models on the shipped checkpoints: policy, reference, value model (a new 1-output head
    on the policy's trunk) and the 1-output reward model (checked to score as the env's R)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from abc_gym.tasks.sentiment import POLICY_PATH, REWARD_MODEL_PATH

    policy = AutoModelForCausalLM.from_pretrained(POLICY_PATH, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(POLICY_PATH, dtype=torch.float32)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the value head is new by design: no "newly initialized" warning
    try:
        value = AutoModelForSequenceClassification.from_pretrained(POLICY_PATH, num_labels=1, dtype=torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)
    reward, reward2 = one_output_reward_model(str(REWARD_MODEL_PATH))
    check_equal_reward(reward, reward2, tok)
    return policy, ref, value, reward


def trl_trainer(completions: int, new_tokens: int, device: str, updates: int, callback: Any, seed: int = 0):
    """TRL's PPOTrainer at the peer settings (module doc), on the shipped models and prompts, for ``updates`` updates."""
    import datasets
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from abc_gym.tasks.sentiment import POLICY_PATH, load_prompts

    _, PPOConfig, PPOTrainer = load_trl()
    tok = AutoTokenizer.from_pretrained(POLICY_PATH, padding_side="left")
    prompts = datasets.Dataset.from_dict(
        {"input_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in load_prompts()]}
    )
    if len(prompts) < completions:
        raise ValueError(f"--completions {completions}: more than the {len(prompts)} shipped prompts (TRL drops short batches)")
    policy, ref, value, reward = trl_models(tok)
    with warnings.catch_warnings():  # transformers 5 renamed gradient_checkpointing, which TRL 1.12 still reads
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
        args = PPOConfig(
            output_dir=tempfile.mkdtemp(prefix="abc_gym_peer_trl_"), report_to="none", save_strategy="no",
            disable_tqdm=True, use_cpu=device == "cpu", seed=seed, bf16=False, fp16=False, gradient_checkpointing=False,
            learning_rate=1e-4, lr_scheduler_type="constant", num_ppo_epochs=1, num_mini_batches=1,
            per_device_train_batch_size=completions, gradient_accumulation_steps=1,
            local_rollout_forward_batch_size=completions, total_episodes=updates * completions,
            response_length=new_tokens, temperature=1.0, kl_coef=0.2, kl_estimator="k1", gamma=1.0, lam=0.95,
            cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, whiten_rewards=False, missing_eos_penalty=None,
            stop_token=None, num_sample_generations=0,
        )
        trainer = PPOTrainer(
            args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward, train_dataset=prompts,
            value_model=value, callbacks=[callback],
        )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


@contextlib.contextmanager
def timed_trl_generation(device: str) -> Iterator[list[float]]:
    """Seconds of each call of TRL's ``batch_generation`` (the ``generate`` of its rollout) while inside
    the block: its module's function is wrapped (TRL 1.12.0's train loop looks it up per call)."""
    from trl.experimental.ppo import ppo_trainer

    seconds: list[float] = []
    original = ppo_trainer.batch_generation

    def timed(*args: Any, **kwargs: Any) -> Any:
        _sync(device)
        t = time.perf_counter()
        out = original(*args, **kwargs)
        _sync(device)
        seconds.append(time.perf_counter() - t)
        return out

    ppo_trainer.batch_generation = timed
    try:
        yield seconds
    finally:
        ppo_trainer.batch_generation = original


@contextlib.contextmanager
def timed_gc() -> Iterator[list[float]]:
    """``[seconds]``: the running total of ``gc.collect()`` calls while inside the block (TRL calls it
    twice per update; it walks every Python object of the process)."""
    total = [0.0]
    original = gc.collect

    def timed(*args: Any, **kwargs: Any) -> int:
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - t

    gc.collect = timed
    try:
        yield total
    finally:
        gc.collect = original


def trl_callback(
    recorder: Recorder, device: str, threads: int | None, generate_seconds: list[float], gc_seconds: list[float]
) -> Any:
    """A ``TrainerCallback`` that times each TRL update (one ``on_step_end`` to the next; its ``generate``
    and ``gc.collect()`` from the running ``generate_seconds`` / ``gc_seconds``) and runs ``recorder``'s
    other timers inside the callback, outside TRL's interval."""
    import torch
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        def __init__(self) -> None:
            self.t = 0.0
            self.gc0 = 0.0
            self.steps = 0
            self.eos_tokens: list[float] = []
            self.threads_seen: set[int] = set()

        def on_train_begin(self, args, state, control, **kw):
            if threads:
                torch.set_num_threads(threads)  # in case the trainer's setup changed it
            _sync(device)
            self.gc0 = gc_seconds[0]
            self.t = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "val/num_eos_tokens" in logs:
                self.eos_tokens.append(float(logs["val/num_eos_tokens"]))

        def on_step_end(self, args, state, control, **kw):
            _sync(device)
            dt = time.perf_counter() - self.t
            self.threads_seen.add(torch.get_num_threads())
            if self.steps:  # the first update is TRL's warm-up
                recorder.add("trl", dt)
                recorder.add("trl.gc", gc_seconds[0] - self.gc0)
                if generate_seconds:
                    recorder.add("trl.generate", generate_seconds[-1])
            self.steps += 1
            recorder.round()
            _sync(device)
            self.gc0 = gc_seconds[0]
            self.t = time.perf_counter()

    return Interleave()


# ----------------------------------------------------------------------------- the measurement and its tables


def measure(completions: int, new_tokens: int, device: str, repeats: int, with_trl: bool, threads: int | None,
            seed: int = 0, gold: bool = False, variant: dict[str, bool] | None = None,
            with_ours: bool = True) -> dict[str, Any]:
    """Medians (seconds) of every timer over ``repeats`` interleaved repeats after one warm-up, and notes.
    ``with_ours=False``: TRL alone, no TokenPPO model or floor built (see :func:`trl_alone`)."""
    recorder = Recorder(our_timers(completions, new_tokens, device, seed, gold, variant) if with_ours else {})
    info: dict[str, Any] = {"variant": options_label(variant)} if variant else {}
    if with_trl:
        with timed_trl_generation(device) as generate_seconds, timed_gc() as gc_seconds, warnings.catch_warnings():
            # its logged var() of one minibatch's ratio: a NaN metric, nothing else
            warnings.filterwarnings("ignore", message=r".*var\(\): degrees of freedom.*")
            cb = trl_callback(recorder, device, threads, generate_seconds, gc_seconds)
            trainer = trl_trainer(completions, new_tokens, device, repeats + 1, cb, seed)
            info["trl_optim"] = str(getattr(trainer.args.optim, "value", trainer.args.optim))
            info["python_objects"] = len(gc.get_objects())
            trainer.train()
        info["trl_threads"] = sorted(cb.threads_seen)
        kept = cb.eos_tokens[1:]
        info["trl_eos_per_completion"] = statistics.mean(kept) / completions if kept else float("nan")
    else:
        for _ in range(repeats + 1):
            recorder.round()
    info["medians"] = recorder.medians()
    info["repeats"] = {k: len(v) for k, v in recorder.times.items()}
    info["seconds"] = recorder.times
    return info


def trl_alone(completions: int, new_tokens: int, device: str, repeats: int, threads: int | None,
              seed: int = 0) -> dict[str, Any]:
    """TRL's update with no TokenPPO model, env or floor in the process yet (run before them): what TRL
    costs where its ``gc.collect()`` walks only its own objects and the imports. Not interleaved with
    TokenPPO, so its ratio to TokenPPO's interleaved medians is subject to drift between the two runs."""
    gc.collect()
    r = measure(completions, new_tokens, device, repeats, True, threads, seed, with_ours=False)
    return {"medians": r["medians"], "python_objects": r["python_objects"]}


def paired_ratio(numerator: list[float], denominator: list[float]) -> str:
    """``"1.23x (1.10-1.31x)"``: median and range of the per-repeat ratios (each repeat ran both, back to back)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)"


def tables(results: dict[int, dict[str, Any]], new_tokens: int, with_trl: bool, gold: bool = False) -> str:
    """The peer table, the rollout / update split with the floor, and the settings that differ."""
    out = []
    if with_trl:
        out += [
            "| completions | TRL PPO s/update | TokenPPO abc s | TokenPPO sparse s | TRL tok/s | TokenPPO abc tok/s "
            "| TokenPPO sparse tok/s | TRL / TokenPPO abc | TRL / TokenPPO sparse | TRL generate s | TRL gc.collect s "
            "| TRL rest s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for n, r in results.items():
            m, tok = r["medians"], n * new_tokens
            gen, gc_s = m.get("trl.generate", float("nan")), m.get("trl.gc", float("nan"))
            out.append(
                f"| {n} | {m['trl']:.2f} | {m['abc']:.2f} | {m['sparse']:.2f} | {tok / m['trl']:,.0f} "
                f"| {tok / m['abc']:,.0f} | {tok / m['sparse']:,.0f} | {m['trl'] / m['abc']:.2f}x | {m['trl'] / m['sparse']:.2f}x "
                f"| {gen:.2f} | {gc_s:.2f} | {m['trl'] - gen - gc_s:.2f} |"
            )
        for n, r in results.items():
            out.append("")
            out.append(f"{n} completions, paired by repeat (median and range of the per-repeat ratios): " + "; ".join(
                f"TRL / TokenPPO {mode} {paired_ratio(r['seconds']['trl'], r['seconds'][mode])}" for mode in ("abc", "sparse")
            ))
        var_rows = [(n, r) for n, r in results.items() if "abc_variant" in r["medians"]]
        if var_rows:
            out += ["", f"TokenPPO abc with {var_rows[0][1]['variant']} (variant_options):", "",
                    "| completions | TRL PPO s/update | TokenPPO abc, variant s | TRL / TokenPPO abc variant (medians) "
                    "| per-repeat median (range) |", "|---:|---:|---:|---:|---|"]
            for n, r in var_rows:
                m = r["medians"]
                out.append(f"| {n} | {m['trl']:.2f} | {m['abc_variant']:.2f} | {m['trl'] / m['abc_variant']:.2f}x "
                           f"| {paired_ratio(r['seconds']['trl'], r['seconds']['abc_variant'])} |")
        alone = [(n, r) for n, r in results.items() if "trl_alone" in r]
        if alone:
            out += ["", "TRL alone: its update measured first, before any TokenPPO model, env or floor existed in the "
                    "process (its gc.collect() walks fewer objects), not interleaved; against the interleaved "
                    "TokenPPO medians above:", "",
                    "| completions | TRL alone s/update | generate s | gc.collect s | Python objects | TRL alone / "
                    "TokenPPO abc | TRL alone / TokenPPO sparse |", "|---:|---:|---:|---:|---:|---:|---:|"]
            for n, r in alone:
                a, m = r["trl_alone"]["medians"], r["medians"]
                out.append(f"| {n} | {a['trl']:.2f} | {a.get('trl.generate', float('nan')):.2f} "
                           f"| {a.get('trl.gc', float('nan')):.2f} | {r['trl_alone']['python_objects']:,} "
                           f"| {a['trl'] / m['abc']:.2f}x | {a['trl'] / m['sparse']:.2f}x |")
        objects = ", ".join(f"{r['python_objects']:,}" for r in results.values() if "python_objects" in r)
        out += ["", "TRL generate: its batch_generation (HF generate, fixed length). TRL gc.collect: its two calls per "
                f"update, which walk every Python object of this process ({objects} here, TokenPPO's included). TRL "
                "rest: the reference, value and RM forwards, GAE, the PPO step and its metrics (the update minus the "
                "median generate and gc).", ""]
    out += [
        "| completions | mode | TokenPPO rollout s | TokenPPO update s | update total s | floor s (generate + RM + ref) "
        "| rollout tok/s | floor tok/s | rollout speed / floor (>= 1.00x: as fast as the floor) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results.items():
        m, tok = r["medians"], n * new_tokens
        for mode in ("abc", "sparse", "abc_variant"):
            if mode not in m:
                continue
            ro = m[f"{mode}.rollout"]
            out.append(
                f"| {n} | {mode if mode != 'abc_variant' else 'abc, ' + r['variant']} | {ro:.2f} | {m[f'{mode}.update']:.2f} | {m[mode]:.2f} | {m['floor']:.2f} "
                f"| {tok / ro:,.0f} | {tok / m['floor']:,.0f} | {m['floor'] / ro:.2f}x |"
            )
    out += ["", "Settings that could not be made equal:", ""]
    out += [f"- {s}" for s in ((*UNEQUAL, gold_note(gold), FLOOR_NOTE) if with_trl else (gold_note(gold), FLOOR_NOTE))]
    return "\n".join(out)


def header(args: argparse.Namespace, trl_version: str | None, threads: int | None) -> str:
    import torch
    import transformers

    dev = args.device
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    peer = f"TRL {trl_version} (trl.experimental.ppo.PPOTrainer)" if trl_version else "TRL skipped (--skip-trl)"
    return (
        f"device {dev} ({name}), torch {torch.__version__}, transformers {transformers.__version__}, {peer}; "
        f"torch threads {threads if threads else torch.get_num_threads()}; shipped policy and RM, float32; "
        f"completions x {args.new_tokens} new tokens, 1 epoch, one minibatch of all completions, lr 1e-4, "
        f"fixed per-token KL 0.2, gamma 1, lambda 0.95, separate value trunk; medians of {args.repeats} interleaved "
        "repeats after one warm-up. One update = rollout + PPO step. TRL: the time between consecutive on_step_end "
        "callbacks (one iteration of its train loop); TokenPPO: collect_rollout() + update(); floor: HF generate "
        "(fixed length) + one RM batch (with ABC attention) + the reference log-probs, on the abc env's prompts."
    )


def run(args: argparse.Namespace) -> str:
    """Every ``--completions`` size, then the tables (also printed as they come)."""
    trl_version = None if args.skip_trl else load_trl()[0]
    threads = None if args.device.startswith("cuda") else args.threads
    results: dict[int, dict[str, Any]] = {}
    with torch_threads(threads), quiet_progress_bars():
        print(header(args, trl_version, threads), flush=True)
        alone = {}
        if not args.skip_trl and not args.no_trl_alone:  # first: before any TokenPPO object exists
            for n in args.completions:
                alone[n] = trl_alone(n, args.new_tokens, args.device, args.repeats, threads, args.seed)
                print(f"[{n} completions, TRL alone] medians: "
                      + ", ".join(f"{k} {v:.3f} s" for k, v in alone[n]["medians"].items()), flush=True)
        for n in args.completions:
            r = measure(n, args.new_tokens, args.device, args.repeats, not args.skip_trl, threads, args.seed, args.gold,
                        None if args.no_variant else variant_options(args.device))
            if n in alone:
                r["trl_alone"] = alone[n]
            results[n] = r
            notes = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("medians", "repeats", "seconds", "trl_alone"))
            print(f"[{n} completions] medians: " + ", ".join(f"{k} {v:.3f} s" for k, v in r["medians"].items())
                  + (f"; {notes}" if notes else ""), flush=True)
        table = tables(results, args.new_tokens, not args.skip_trl, args.gold)
    if args.json:
        import json

        import torch
        import transformers

        raw = {
            "header": header(args, trl_version, threads), "torch": torch.__version__,
            "transformers": transformers.__version__, "trl": trl_version, "new_tokens": args.new_tokens,
            "gold": args.gold, "unequal": list(UNEQUAL), "results": {str(n): r for n, r in results.items()},
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides on it)")
    p.add_argument("--completions", type=int, nargs="+", default=[64], help="completions per update (each size in turn)")
    p.add_argument("--new-tokens", type=int, default=48, help="new tokens per completion")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats timed after one warm-up")
    p.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-trl", action="store_true", help="TokenPPO and the floor only (TRL not needed)")
    p.add_argument("--gold", action="store_true",
                   help="keep the env's VADER gold diagnostics (the registered env's default; off: gold_scorer=None)")
    p.add_argument("--no-variant", action="store_true",
                   help="skip the row of TokenPPO abc with other switches (variant_options: CPU fused_activation=False, "
                   "CUDA compile_decode=True)")
    p.add_argument("--no-trl-alone", action="store_true",
                   help="skip the first measurement of TRL alone (before any TokenPPO object exists in the process)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write every repeat's seconds and the medians here")
    args = p.parse_args(argv)
    for flag, values in (("--completions", args.completions), ("--new-tokens", [args.new_tokens]),
                         ("--repeats", [args.repeats]), ("--threads", [args.threads])):
        if any(v < 1 for v in values):
            p.error(f"{flag} must be >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device {args.device}: no CUDA device here")
        torch.cuda.set_device(torch.device(args.device))  # accelerate (TRL's side) takes the current device
    elif args.device != "cpu":
        p.error(f"--device {args.device}: use cpu, cuda or cuda:N")
    if args.json:
        import os

        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            p.error(f"--json {args.json}: {folder} is not a writable folder")
    if not args.skip_trl:
        from abc_gym.tasks.sentiment import load_prompts

        n_prompts = len(load_prompts())
        if max(args.completions) > n_prompts:
            p.error(f"--completions {max(args.completions)}: TRL draws batches without repeats from the "
                    f"{n_prompts} shipped prompts; use at most {n_prompts}")
    try:
        print(run(args))
    except TrlMissing as err:
        sys.exit(f"peer_trl: {err}")


if __name__ == "__main__":
    main()
