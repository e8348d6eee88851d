"""Credit schemes: how one scalar score R is spread over a completion, and the registry of schemes.

The formulas (sparse, uniform, ABC, oracle, RED) are pure tensor functions in
:mod:`abc_gym.credit_functions`, re-exported here.

The registry
------------
Each mode is a :class:`CreditScheme` in :data:`credit_registry`: its function, what it needs
from the scoring pass (attention, prefix scores, gold credit), whether it uses ``beta`` and
which reward models it accepts. The engine (:class:`~abc_gym.core.TokenEpisodes`) asks the
scheme what to compute, and :meth:`CreditScheme.credit` checks the conservation contract
above for every scheme, built in or added with :func:`register_credit` (docs/extending.md).
The registry lives in the process: a worker process sees the schemes registered by the
modules it imports (``reward_mode="my_pkg.credit:first-token"`` imports ``my_pkg.credit``
first, as gymnasium's ``"module:Env-v0"`` ids do).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from abc_gym.credit_functions import (
    abc_credit,
    check_beta,
    last_token_index,
    normalise_weights,
    oracle_credit,
    red_credit,
    red_differences,
    redistribute,
    sparse_credit,
    uniform_credit,
)

__all__ = [  # the functions of abc_gym.credit_functions are re-exported: import them from here
    "CONTRACT_TOL",
    "CreditScheme",
    "REWARD_MODES",  # noqa: F822 - a module __getattr__ (always current)
    "RewardMode",
    "abc_credit",
    "beta_modes",
    "check_beta",
    "check_contract",
    "check_reward_mode",
    "credit_registry",
    "credit_scheme",
    "last_token_index",
    "normalise_weights",
    "oracle_credit",
    "red_credit",
    "red_differences",
    "redistribute",
    "register_credit",
    "reward_modes",
    "sparse_credit",
    "token_rewards",
    "uniform_credit",
    "unregister_credit",
]

#: The built-in modes (kept for type hints; the registry is the source of truth).
RewardMode = Literal["sparse", "abc", "uniform", "oracle", "red"]

#: Relative and absolute tolerance of the contract's row sum (a float32 scheme passes; a wrong one does not).
CONTRACT_TOL = 1e-6


CreditFn = Callable[..., torch.Tensor]
#: ``reward_model -> None`` if the scheme can use it, else a sentence saying why not.
AcceptsFn = Callable[[Any], "str | None"]

# What each declared need is called in the function's keywords, and in errors.
_INPUTS: dict[str, tuple[str, str]] = {
    "needs_attention": ("attention", "the reward model's attention"),
    "needs_prefix_scores": ("prefix_scores", "the reward model's prefix scores"),
    "needs_gold_credit": ("gold_weights", "the task's gold per-token credit"),
    "uses_beta": ("beta", "the mixing weight beta"),
}


@dataclass(frozen=True)
class CreditScheme:
    """One way of spreading R over a completion: a ``reward_mode`` of the envs.

    Attributes:
        name: the ``reward_mode`` string.
        fn: ``fn(score, completion_mask, **inputs) -> (B, L)`` token rewards (see :data:`CreditFn`);
            called by keyword with ``score`` ``(B,)``, ``completion_mask`` ``(B, L)`` bool and
            only the inputs declared below.
        needs_attention: the scoring pass must return the reward model's attention
            (``attention=`` ``(B, L)``, >= 0, not yet renormalised).
        needs_prefix_scores: it must return R(x, y<=t) at each completion position
            (``prefix_scores=`` ``(B, L)``); only a decoder reward model sharing the policy's
            tokenizer can.
        needs_gold_credit: the env must have ``gold_credit=`` (``gold_weights=`` ``(B, L)`` >= 0).
        uses_beta: ``beta=`` (float in [0, 1]) is passed, and the benchmark sweeps / labels it.
        accepts: optional ``reward_model -> None | reason``: refuse reward models beyond the needs above.
        doc: one line for tables and ``--help``.
    """

    name: str
    fn: CreditFn
    needs_attention: bool = False
    needs_prefix_scores: bool = False
    needs_gold_credit: bool = False
    uses_beta: bool = False
    accepts: AcceptsFn | None = None
    doc: str = ""

    # ------------------------------------------------------------ checks the engine asks for
    def reward_model_problem(self, reward_model: Any) -> str | None:
        """Why this scheme cannot use ``reward_model`` (a :class:`~abc_gym.reward_model.RewardModel`), or None."""
        if self.needs_prefix_scores:
            problem = reward_model.prefix_scores_problem()
            if problem is not None:
                return problem
        return None if self.accepts is None else self.accepts(reward_model)

    def check_reward_model(self, reward_model: Any) -> None:
        """Raise a ``ValueError`` naming the fix if this scheme cannot use ``reward_model``."""
        problem = self.reward_model_problem(reward_model)
        if problem is None:
            return
        if self.needs_prefix_scores and reward_model.prefix_scores_problem() is not None:
            raise ValueError(
                f"reward_mode={self.name!r} needs the reward model's score of every completion prefix from one "
                f"forward, and this reward model cannot give it: {problem}. Use reward_mode='abc' (attention "
                "credit works with encoders and other tokenizers), or a decoder reward model that shares the "
                "policy's tokenizer"
            )
        others = [m for m in reward_modes() if m != self.name]
        raise ValueError(f"reward_mode={self.name!r} cannot use this reward model: {problem}. Use one of {', '.join(others)}")

    def check_gold_credit(self, has_gold_credit: bool) -> None:
        """Raise a ``ValueError`` naming ``gold_credit=`` if the scheme needs gold credit and the env has none."""
        if self.needs_gold_credit and not has_gold_credit:
            others = [m for m, s in credit_registry.items() if not s.needs_gold_credit]
            raise ValueError(
                f"reward_mode={self.name!r} needs the task's gold per-token credit, and this env has no gold_credit: "
                f"use one of {', '.join(others)}, or pass gold_credit=..."
            )

    # ------------------------------------------------------------ the credit
    def credit(
        self,
        score: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        beta: float = 0.8,
        attention: torch.Tensor | None = None,
        gold_weights: torch.Tensor | None = None,
        prefix_scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token rewards ``(B, L)`` float64 of this scheme, checked against the conservation contract.

        Args:
            score: ``(B,)`` R.
            completion_mask: ``(B, L)`` bool.
            beta, attention, gold_weights, prefix_scores: the inputs; only those the scheme
                declares are passed on (``(B, L)`` tensors, ``beta`` a float).
        Raises:
            ValueError: a declared input is None (naming the keyword that supplies it), or the
                scheme's output breaks the contract (see :func:`check_contract`).
        """
        given = {"attention": attention, "prefix_scores": prefix_scores, "gold_weights": gold_weights, "beta": beta}
        kwargs: dict[str, Any] = {}
        for flag, (key, what) in _INPUTS.items():
            if not getattr(self, flag):
                continue
            if given[key] is None:
                hint = ", or pass gold_credit=... to the env" if key == "gold_weights" else ""
                raise ValueError(f"reward_mode={self.name!r} needs {what}, got None{hint}")
            kwargs[key] = given[key]
        out = self.fn(score=score, completion_mask=completion_mask, **kwargs)
        return check_contract(self.name, out, score, completion_mask)


def check_contract(name: str, credit: Any, score: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """The conservation contract every scheme must meet, checked on its output.

    Args:
        name: the scheme (named in the error).
        credit: the scheme's output, expected ``(B, L)`` real tensor.
        score: ``(B,)`` R.
        completion_mask: ``(B, L)`` bool.
    Returns:
        ``credit`` as float64 (unchanged values: a float64 output is returned as is).
    Raises:
        ValueError: not a ``(B, L)`` real tensor, non-finite on the completion, non-zero on a
            prompt or padding position, or a row whose sum differs from R by more than
            :data:`CONTRACT_TOL` (relative and absolute).
    """
    mask = completion_mask.bool()
    where = f"credit scheme {name!r} broke the credit contract"
    if not isinstance(credit, torch.Tensor) or credit.is_complex() or credit.dtype == torch.bool:
        raise ValueError(f"{where}: it must return a real (B, L) torch tensor, got {type(credit).__name__}")
    if tuple(credit.shape) != tuple(mask.shape):
        raise ValueError(f"{where}: returned shape {tuple(credit.shape)}, expected (B, L) = {tuple(mask.shape)}")
    credit = credit.to(device=mask.device, dtype=torch.float64)  # a no-op for the built-in schemes
    r = score.to(device=mask.device, dtype=torch.float64)
    outside = (credit != 0) & ~mask  # NaN outside counts as non-zero
    off = ~torch.isclose(credit.sum(dim=-1), r, rtol=CONTRACT_TOL, atol=CONTRACT_TOL)
    # one host sync for the three checks (the engine's batch may be on a GPU)
    any_outside, any_nonfinite, any_off = torch.stack(
        [outside.any(), ~torch.isfinite(credit).all(), off.any()]
    ).tolist()
    if any_outside:
        rows = torch.nonzero(outside.any(-1)).flatten().tolist()
        raise ValueError(f"{where}: non-zero credit outside the completion (prompt or padding) in row(s) {rows}")
    if any_nonfinite:
        raise ValueError(f"{where}: NaN or inf credit on the completion")
    if any_off:
        b = int(torch.nonzero(off).flatten()[0])
        raise ValueError(
            f"{where}: row {b} sums to {float(credit[b].sum()):.6g}, not R = {float(r[b]):.6g} (each row must sum "
            "to R; e.g. give the last completion token R - sum(others))"
        )
    return credit


#: name -> :class:`CreditScheme`: the built-in modes, then those added with :func:`register_credit`.
credit_registry: dict[str, CreditScheme] = {}


def _bind_check(name: str, fn: CreditFn, keys: list[str]) -> None:
    """The function must take ``score``, ``completion_mask`` and each declared input as keywords."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: trust the declaration
        return
    try:
        sig.bind(score=None, completion_mask=None, **{k: None for k in keys})
    except TypeError as err:
        raise TypeError(
            f"credit scheme {name!r}: fn{sig} must accept the keywords score, completion_mask"
            f"{''.join(', ' + k for k in keys)} (the inputs it declares): {err}"
        ) from None


def register_credit(
    name: str,
    fn: CreditFn,
    *,
    needs_attention: bool = False,
    needs_prefix_scores: bool = False,
    needs_gold_credit: bool = False,
    uses_beta: bool = False,
    accepts: AcceptsFn | None = None,
    doc: str | None = None,
    override: bool = False,
) -> CreditScheme:
    """Add a credit scheme: afterwards ``reward_mode=name`` works in every env, ``agents`` and the benchmark.

    Args:
        name: the ``reward_mode`` string (no ``":"``, which is reserved for ``"module:name"``).
        fn: ``fn(score, completion_mask, **inputs) -> (B, L)`` token rewards; ``score`` ``(B,)``,
            ``completion_mask`` ``(B, L)`` bool, plus a keyword per declared input:
            ``attention`` / ``prefix_scores`` / ``gold_weights`` ``(B, L)``, ``beta`` float.
            Each row must sum to R and be 0 outside the completion (checked on every call).
        needs_attention, needs_prefix_scores, needs_gold_credit, uses_beta, accepts: see
            :class:`CreditScheme`.
        doc: one line for tables; default: the first line of ``fn.__doc__``.
        override: replace an existing scheme of this name (built-in ones included).
    Returns:
        The registered :class:`CreditScheme`.
    Raises:
        ValueError: ``name`` is taken (pass ``override=True``) or malformed.
        TypeError: ``fn`` / ``accepts`` not callable, a flag not a bool, or ``fn`` does not
            take the keywords its declared inputs need.

    The registry is per process: register in a module that your worker processes import
    (docs/extending.md).
    """
    if not isinstance(name, str) or not name.strip() or ":" in name or name != name.strip():
        raise ValueError(f"credit scheme name must be a non-empty string without ':' or surrounding spaces, got {name!r}")
    if name in credit_registry and not override:
        raise ValueError(f"credit scheme {name!r} is already registered: pass override=True to replace it")
    if not callable(fn):
        raise TypeError(f"credit scheme {name!r}: fn must be a function, got {type(fn).__name__}")
    if accepts is not None and not callable(accepts):
        raise TypeError(f"credit scheme {name!r}: accepts must be None or a function reward_model -> None | reason")
    flags = {
        "needs_attention": needs_attention,
        "needs_prefix_scores": needs_prefix_scores,
        "needs_gold_credit": needs_gold_credit,
        "uses_beta": uses_beta,
    }
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"credit scheme {name!r}: {flag} must be True or False, got {value!r}")
    _bind_check(name, fn, [_INPUTS[f][0] for f, v in flags.items() if v])
    if doc is None:
        doc = (inspect.getdoc(fn) or "").split("\n")[0]
    scheme = CreditScheme(name, fn, accepts=accepts, doc=doc, **flags)
    credit_registry[name] = scheme
    return scheme


def unregister_credit(name: str) -> None:
    """Remove a scheme added with :func:`register_credit` (built-in modes cannot be removed)."""
    if name in _BUILT_IN:
        raise ValueError(f"{name!r} is a built-in credit scheme and cannot be removed (override=True replaces it)")
    if name not in credit_registry:
        raise ValueError(f"no credit scheme {name!r} is registered")
    del credit_registry[name]


def credit_scheme(name: str) -> CreditScheme:
    """The registered scheme called ``name``.

    ``"module:name"`` first imports ``module`` (which registers the scheme), as gymnasium does
    for ``"module:Env-v0"`` ids: the way a spawned worker process gets a user's scheme.

    Raises:
        ValueError: no such scheme, naming the registered ones.
    """
    if isinstance(name, str) and name not in credit_registry and ":" in name:
        module, _, short = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"reward_mode={name!r}: cannot import {module!r} to find credit scheme {short!r}: {err}") from err
        name = short
    scheme = credit_registry.get(name) if isinstance(name, str) else None
    if scheme is None:
        raise ValueError(
            f"unknown reward_mode {name!r}: use one of {', '.join(reward_modes())} "
            "(or add one with abc_gym.register_credit)"
        )
    return scheme


def reward_modes() -> tuple[str, ...]:
    """The registered ``reward_mode`` names, built-in ones first, in registration order."""
    return tuple(credit_registry)


def beta_modes() -> tuple[str, ...]:
    """The registered modes whose credit depends on ``beta`` (the benchmark labels and sweeps these)."""
    return tuple(m for m, s in credit_registry.items() if s.uses_beta)


def check_reward_mode(mode: str) -> CreditScheme:
    """The scheme of ``mode`` (see :func:`credit_scheme`); a ``ValueError`` naming the valid modes otherwise."""
    return credit_scheme(mode)


def token_rewards(
    mode: str,
    score: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    beta: float = 0.8,
    attention: torch.Tensor | None = None,
    gold_weights: torch.Tensor | None = None,
    prefix_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """The credit of ``mode`` (a registered scheme), contract-checked: see :meth:`CreditScheme.credit`.

    Args:
        mode: a name in :func:`reward_modes`.
        score: ``(B,)`` R.
        completion_mask: ``(B, L)`` bool.
        beta: mixing weight (schemes with ``uses_beta``: ``abc`` and ``red``).
        attention: ``(B, L)`` reward-model attention (schemes with ``needs_attention``: ``abc``).
        gold_weights: ``(B, L)`` gold credit (``needs_gold_credit``: ``oracle``).
        prefix_scores: ``(B, L)`` R(x, y<=t) per completion position (``needs_prefix_scores``: ``red``).
    Returns:
        ``(B, L)`` float64 token rewards, summing to ``score`` over each completion.
    """
    return credit_scheme(mode).credit(
        score, completion_mask, beta=beta, attention=attention, gold_weights=gold_weights, prefix_scores=prefix_scores
    )


_BUILT_IN: tuple[str, ...] = ("sparse", "abc", "uniform", "oracle", "red")
register_credit("sparse", sparse_credit, doc="R on the last token (plain RLHF)")
register_credit("abc", abc_credit, needs_attention=True, uses_beta=True,
                doc="beta * a_t * R + (1 - beta) * R * [t == T], a_t the reward model's attention (ABC)")
register_credit("uniform", uniform_credit, doc="R / T on every token")
register_credit("oracle", oracle_credit, needs_gold_credit=True, doc="R spread by the task's gold per-token credit")
register_credit("red", red_credit, needs_prefix_scores=True, uses_beta=True,
                doc="beta * d_t + (1 - beta) * R * [t == T], d_t the reward model's prefix-score differences (RED)")


def __getattr__(name: str) -> Any:
    # REWARD_MODES stays importable and always current (user schemes included): PEP 562.
    if name == "REWARD_MODES":
        return reward_modes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
