"""Upstream as it was, and as it is: named profiles, each a set of individual quirk switches.

    python -m minirec.sft --preset paper --upstream paper-release              # upstream at 81b4ba9 (the paper's code)
    python -m minirec.grpo --preset paper --upstream 2026-02                   # upstream at 8e03e35 (current upstream)
    python -m minirec.evaluate --model REF --upstream none --quirks eval_batch_8
    mlflow run . -e evaluate -P model=REF -P upstream=paper-release -P quirks=no_eval_batch_8 --env-manager local

"Upstream behaviour" is no longer one thing (docs/upstream.md 11): the code released with the paper (``81b4ba9``,
2025-11-26) and today's upstream (``8e03e35``, 2026-02-01) differ in prompts, SFT tasks, masking and roll-outs.
Every result-changing upstream behaviour that minirec does differently by default is one **switch** here; a
**profile** is a named set of switches:

- ``none`` (the default): minirec's fixed behaviour, no switch on;
- ``paper-release``: upstream at ``81b4ba9``;
- ``2026-02``: upstream at ``8e03e35`` (docs/upstream-revisions-notes.md 8, "as run with a base checkpoint").

**How explicit switches combine with a profile.** The resolved set starts from the profile's switches; then each
entry of ``quirks``, in order, turns one switch on (``name``) or off (``no_name``, or ``-name`` where the value
does not start the argument), so ``upstream=paper-release quirks=no_eval_batch_8`` is the paper release with the
harness's evaluation batch, and ``upstream=none quirks=alignment_leak`` is minirec with just the 8.1 A leak.
Switches that exclude each other (the two upstream masking modes) are an error, as is an unknown name.
``upstream_quirks=true`` (the single switch of earlier versions) is an alias of ``upstream=paper-release``;
together with ``upstream=2026-02`` it is an error.

Every stage that has these settings logs, as params: ``upstream.profile`` (the profile's name),
``upstream.summary`` (the profile plus the explicit changes, e.g. ``paper-release -eval_batch_8``), one
``upstream.<switch>`` = ``true``/``false`` per switch (all of them, whichever stage: the profile is a property
of the whole pipeline), and ``upstream.stage_switches``, the switches this stage acts on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from minirec.errors import SettingsError
from minirec.settings import Settings, setting

NONE, PAPER_RELEASE, CURRENT = "none", "paper-release", "2026-02"
PROFILE_NAMES = (NONE, PAPER_RELEASE, CURRENT)


@dataclass(frozen=True)
class Switch:
    """One upstream behaviour minirec does not do by default; turning it on restores it."""

    name: str
    reference: str  # section of docs/upstream.md (or of docs/upstream-revisions-notes.md)
    stages: tuple[str, ...]  # stages whose results it changes
    restores: str  # what upstream does, which the switch brings back
    default: str  # what minirec does instead
    dump_tasks: tuple[str, ...] = ()  # tasks of `python -m minirec.prompts dump` whose strings it can change


SWITCH_LIST = (
    Switch("alignment_leak", "8.1 A", ("sft",),
           "the SFT alignment prompts end with their own answer after '### Response:\\n'",
           "leak-free alignment prompts (as upstream since 2025-12-01)", ("sft_item_alignment",)),
    Switch("rl_answer_leak", "8.1 B", ("grpo",),
           "the RL title->SID and description->SID prompts end with their answer; with constraint_fail_open this "
           "forces the first generated token to '\\n' and leaves the rest unconstrained",
           "leak-free prompts (as upstream since 2025-12-01)", ("rl_title_to_sid",)),
    Switch("three_token_sids", "1.6, 8.1 I", ("sft", "grpo"),
           "SIDs cut to their first 3 tokens in the alignment, fusion, title-history->SID and RL title/description "
           "tasks (a 4th dedup token is dropped; only matters for 4-token SIDs)", "full SIDs",
           ("sft_item_alignment", "sft_sid_history_to_title", "sft_title_history_to_sid", "rl_title_to_sid")),
    Switch("sft_three_tasks", "11.1", ("sft",),
           "SFT trains 3 tasks: sid_history, item_alignment, sid_history_to_title (the given tasks are restricted "
           "to these)", "the tasks given (default all five, as the paper release)",
           ("sft_title_history_to_title", "sft_title_history_to_sid")),
    Switch("sft_linear_schedule", "4.1", ("sft",), "SFT learning rate decays linearly (the code's schedule)",
           "lr_scheduler as set (default cosine with warm-up, as the paper says)"),
    Switch("sft_pure_bf16", "4.1", ("sft",),
           "SFT loads the weights in bf16 (no fp32 master copy) when training in bf16",
           "fp32 master weights under bf16 autocast"),
    Switch("sft_ddp", "4.1, 9", ("sft",), "several-GPU SFT is plain DDP (torchrun): the Trainer gets no DeepSpeed "
           "config", "DeepSpeed ZeRO-2 (fp32 master weights and sharded optimiser states)"),
    Switch("rl_empty_description", "5.3", ("grpo",),
           "one RL prompt for the empty description ('follows: \"\".'), whose target is the last item without one",
           "no prompt for the empty description", ("rl_title_to_sid",)),
    Switch("rl_sample_raises", "5.3, 11.6", ("grpo",),
           "RLSeqTitle2SidDataset(sample=10000) raises when train has fewer rows: the run stops with an error naming "
           "the numbers", "all rows are drawn (in the seeded order of sample(len, random_state=0)), said in the log "
           "and in the params"),
    Switch("rollout_beam_sampling", "11.3", ("grpo",),
           "beam roll-outs sample (do_sample=True, temperature, top_k/top_p None, num_beams = G) through generate",
           "deterministic beams"),
    Switch("constraint_fail_open", "6.3, 8.1 F", ("evaluate", "grpo"),
           "the constraint masks with -1e6, keys its first step on the prompt's last tokens and leaves a row with an "
           "unknown prefix unmasked (decodes it through generate, never the sid decoder)",
           "-inf mask; a row outside the grammar is masked entirely and reported"),
    Switch("constraint_eos_fallback", "11.2", ("evaluate", "grpo"),
           "the constraint masks with -inf, keys its first step on the prompt's last tokens and allows only EOS to a "
           "row with an unknown prefix, with a warning (through generate, never the sid decoder)",
           "a row outside the grammar is masked entirely and reported"),
    Switch("eval_batch_8", "6.1", ("evaluate",), "evaluation decodes batches of 8 prompts (evaluate.sh)",
           "batch_size as set (default 16)"),
    Switch("text_cut_2000", "3.1, 8.1 N", ("sids",), "item text fields of 2,000+ characters are emptied before "
           "embedding", "fields kept whole"),
)
SWITCHES = {switch.name: switch for switch in SWITCH_LIST}

PROFILES: dict[str, frozenset[str]] = {
    NONE: frozenset(),
    PAPER_RELEASE: frozenset({
        "alignment_leak", "rl_answer_leak", "three_token_sids", "sft_linear_schedule", "sft_pure_bf16", "sft_ddp",
        "rl_empty_description", "rl_sample_raises", "constraint_fail_open", "eval_batch_8", "text_cut_2000",
    }),
    CURRENT: frozenset({
        "three_token_sids", "sft_three_tasks", "sft_linear_schedule", "sft_pure_bf16", "sft_ddp",
        "rl_empty_description", "rl_sample_raises", "rollout_beam_sampling", "constraint_eos_fallback",
        "eval_batch_8", "text_cut_2000",
    }),
}
EXCLUSIVE = (("constraint_fail_open", "constraint_eos_fallback"),)
NEGATIONS = ("no_", "-")

# Masking modes of minirec.constraint, chosen by the two constraint switches.
STRICT, FAIL_OPEN, EOS_FALLBACK = "strict", "fail_open", "eos_fallback"


def _parse_entry(entry: str) -> tuple[str, bool]:
    text = entry.strip()
    for prefix in NEGATIONS:
        if text.startswith(prefix) and text[len(prefix):] in SWITCHES:
            return text[len(prefix):], False
    return text, True


def resolve_quirks(profile: str = NONE, quirks: Iterable[str] = (), upstream_quirks: bool = False) -> frozenset[str]:
    """The switches that are on: the profile's (``upstream_quirks``: ``paper-release``'s), then ``quirks`` in order."""
    profile = effective_profile(profile, upstream_quirks)
    on = set(PROFILES[profile])
    for entry in quirks:
        name, value = _parse_entry(entry)
        if name not in SWITCHES:
            raise SettingsError(f"quirks: unknown switch {entry!r}; known: {', '.join(SWITCHES)} (prefix no_ to turn "
                                "one off)")
        (on.add if value else on.discard)(name)
    for group in EXCLUSIVE:
        both = [name for name in group if name in on]
        if len(both) > 1:
            raise SettingsError(f"quirks: {' and '.join(both)} exclude each other (two masking modes); turn one off "
                                f"with no_{both[0]} or no_{both[1]}")
    return frozenset(on)


def effective_profile(profile: str, upstream_quirks: bool = False) -> str:
    """``profile``, or ``paper-release`` for the ``upstream_quirks`` alias (an error with ``2026-02``)."""
    if profile not in PROFILES:
        raise SettingsError(f"upstream = {profile!r} is not allowed: expected one of {', '.join(PROFILE_NAMES)}")
    if upstream_quirks:
        if profile not in (NONE, PAPER_RELEASE):
            raise SettingsError(f"upstream_quirks = true is an alias of upstream = {PAPER_RELEASE} and cannot be "
                                f"combined with upstream = {profile}")
        return PAPER_RELEASE
    return profile


def summary(profile: str, on: frozenset[str]) -> str:
    """The profile's name plus the explicit differences, e.g. ``paper-release -eval_batch_8 +rollout_beam_sampling``."""
    base = PROFILES[profile]
    changes = [f"+{name}" for name in SWITCHES if name in on and name not in base]
    changes += [f"-{name}" for name in SWITCHES if name in base and name not in on]
    return " ".join([profile, *changes])


def masking_mode(on: Iterable[str]) -> str:
    """The constraint processor's masking mode for a set of switches (``strict`` unless a constraint switch is on)."""
    on = set(on)
    if "constraint_fail_open" in on:
        return FAIL_OPEN
    if "constraint_eos_fallback" in on:
        return EOS_FALLBACK
    return STRICT


def switch_params(profile: str, on: frozenset[str], stage: str = "") -> dict[str, str]:
    """What a run logs about its upstream switches (see the module docstring)."""
    params = {"upstream.profile": profile, "upstream.summary": summary(profile, on),
              **{f"upstream.{name}": str(name in on).lower() for name in SWITCHES}}
    if stage:
        params["upstream.stage_switches"] = ",".join(stage_switches(stage)) or "none"
    return params


@dataclass
class UpstreamSettings(Settings):
    """The setting pair every stage that upstream's quirks touch shares: ``upstream`` (a profile) and ``quirks``.

    Mix it into a stage's settings before the stage's base class (``class XSettings(UpstreamSettings,
    LaunchedSettings)``). ``switches()`` is the resolved set, ``switch(name)`` one of them; the resolved values are
    logged with the settings (``resolved()``).
    """

    upstream: str = setting(NONE, "upstream profile: none (minirec's fixes), paper-release (upstream at 81b4ba9, "
                            "the paper's code) or 2026-02 (upstream at 8e03e35); see minirec/upstream.py",
                            choices=PROFILE_NAMES)
    quirks: list = setting([], "upstream switches turned on (name) or off (no_name) on top of the profile, "
                           f"comma-separated; known: {', '.join(SWITCHES)}")
    upstream_quirks: bool = setting(False, f"alias of upstream={PAPER_RELEASE} (the single switch of earlier "
                                    "versions; now every paper-release switch, docs/upstream-profiles.md)")

    def check(self) -> None:
        super().check()
        self.switches()  # raises SettingsError for an unknown or contradictory switch

    @property
    def profile(self) -> str:
        return effective_profile(self.upstream, self.upstream_quirks)

    def switches(self) -> frozenset[str]:
        return resolve_quirks(self.upstream, self.quirks, self.upstream_quirks)

    def switch(self, name: str) -> bool:
        if name not in SWITCHES:
            raise KeyError(f"unknown upstream switch {name!r}")
        return name in self.switches()

    @property
    def masking(self) -> str:
        return masking_mode(self.switches())

    def upstream_params(self) -> dict[str, str]:
        return switch_params(self.profile, self.switches(), self.STAGE)

    def resolved(self):
        return {**super().resolved(), **self.upstream_params()}


def stage_switches(stage: str) -> list[str]:
    """The switches that act in ``stage``, in their table order."""
    return [name for name, switch in SWITCHES.items() if stage in switch.stages]


# --- the released checkpoints (docs/upstream.md 11.7) ----------------------------------------------------------

RELEASED_REPOS = ("kkknight/MiniOneRec", "k925238839/MiniOneRec")  # Hugging Face, ModelScope mirror
RELEASED_FOLDERS = {"Industrial_ckpt": "Industrial_and_Scientific", "Office_ckpt": "Office_Products"}
MODEL_KIND_TAG, RELEASED_TAG = "model_kind", "released_checkpoint"
RELEASED_KIND = "released_checkpoint"


def released_checkpoint_name(ref: str) -> str | None:
    """``Industrial_ckpt`` / ``Office_ckpt`` (or the repository id) when ``ref`` names one of upstream's released
    checkpoints: a reference that mentions ``kkknight/MiniOneRec`` (or its mirror, or the hub cache's
    ``models--kkknight--MiniOneRec``), or a folder named as the repository's sub-folders; else ``None``."""
    from pathlib import PurePath

    text = str(ref).rstrip("/")
    for part in reversed(PurePath(text).parts):
        if part in RELEASED_FOLDERS:
            return part
    for repo in RELEASED_REPOS:
        if repo in text or repo.replace("/", "--") in text:
            return repo
    return None


def check_released_category(name: str | None, category: str) -> None:
    """A released checkpoint was trained on one category: evaluating it on the other is a mistake."""
    trained = RELEASED_FOLDERS.get(name or "")
    if trained and trained != category:
        raise SettingsError(f"the released checkpoint {name} was trained on {trained}, not {category}: pass "
                            f"category={trained} or the other checkpoint")
