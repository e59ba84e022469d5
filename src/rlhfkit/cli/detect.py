"""``rlhfkit detect``: compare tuned vs base responses and flag reward hacking.

Inputs (JSONL, one object per line; other fields ignored):

- ``{"prompt": ..., "response": "..."}`` rows, e.g. PPO's ``samples.jsonl`` (with ``step``, ``score``,
  ``kl``) — see ``--step`` / ``--base-step`` for which steps are used;
- candidate files ``{"prompt": ..., "responses": ["...", ...]}`` (strings or ``{"id", "text"}`` objects).

An optional boolean ``has_eos`` on every row of both files adds the missing-EOS signal.
Exit status: 1 when anything is flagged (a token or phrase, a ``--word``, or a drift signal),
0 when clean, 2 on bad input (file and line in the message).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlhfkit.cli._common import parse_config
from rlhfkit.errors import ConfigError, DataError


@dataclass
class DetectConfig:
    """Compare tuned vs base responses: tokens and phrases used far more often, length/repetition/
    diversity drift, and (with a reward model) whether the reward model pays for the flagged tokens."""

    base: str
    """JSONL of base-policy responses ('response' rows or 'responses' candidate lists)"""
    tuned: str
    """JSONL of tuned-policy responses, e.g. a PPO run's samples.jsonl"""
    word: tuple[str, ...] = ()
    """also report these words/phrases individually, e.g. --word fantastic"""
    reward_model: str | None = None
    """reward model directory: probe each flagged token (delete from tuned, insert into base, rescore)"""
    json: bool = False
    """print one JSON document instead of tables"""
    min_count: int = 5
    """minimum occurrences in the tuned responses for a flag (and in both together to be tested)"""
    alpha: float = 0.05
    """significance level (after multiple-testing correction for the scan)"""
    threshold: float = 2.0
    """flag only when the rate per 1,000 words rose by more than this factor"""
    max_n: int = 3
    """longest phrase scanned, in words"""
    correction: Literal["bh", "holm"] = "bh"
    """multiple-testing correction: bh (false discovery rate) or holm (family-wise error)"""
    step: str = "last"
    """rows of --tuned used when they carry a 'step': last, first, all, or a step number"""
    base_step: str = "first"
    """rows of --base used when they carry a 'step': first, last, all, or a step number"""
    top: int = 20
    """rows shown in the tables (JSON lists every flagged finding)"""
    probe_top: int = 5
    """probe at most this many flagged tokens with the reward model"""
    batch_size: int = 32
    """reward-model batch size"""
    seed: int = 0
    """seed of the permutation tests"""
    exclude: tuple[str, ...] = field(default_factory=tuple)
    """never report or flag these words/phrases (e.g. a template the tuned prompts require)"""

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError("--min-count must be ≥ 1")
        if not 0 < self.alpha < 1:
            raise ValueError("--alpha must be between 0 and 1")
        if self.threshold < 1:
            raise ValueError("--threshold must be ≥ 1 (a factor of the base rate)")
        if not 1 <= self.max_n <= 5:
            raise ValueError("--max-n must be between 1 and 5")
        for name in ("step", "base_step"):
            value = getattr(self, name)
            if value not in ("first", "last", "all") and not value.lstrip("-").isdigit():
                raise ValueError(
                    f"--{name.replace('_', '-')} must be first, last, all or an integer, got {value!r}"
                )


@dataclass
class Sample:
    prompt: str
    response: str
    has_eos: bool | None


def read_samples(path: str | Path, step: str = "all") -> tuple[list[Sample], dict[str, Any]]:
    """Read response rows or candidate lists; select rows by ``step`` when rows carry one."""
    from rlhfkit.data.candidates import (
        iter_records,
        parse_candidate,
        parse_response_row,
        step_and_eos,
    )

    path = Path(path)
    rows: list[tuple[int | None, Sample]] = []
    for line, obj in iter_records(path):
        if isinstance(obj, dict) and "response" in obj:
            row = parse_response_row(obj, path, line)
            rows.append((row.step, Sample(row.prompt_text, row.response_text, row.has_eos)))
        elif isinstance(obj, dict) and "responses" in obj:
            group = parse_candidate(obj, path, line, allow_empty_prompt=True)
            row_step, has_eos = step_and_eos(obj, path, line)
            rows += [
                (row_step, Sample(group.prompt_text, r.text, has_eos)) for r in group.responses
            ]
        else:
            raise DataError("expected a 'response' string or a 'responses' list", path, line)
    if not rows:
        raise DataError("no responses found (the file is empty)", path)
    steps = sorted({s for s, _ in rows if s is not None})
    chosen: int | None = None
    if steps and step != "all":
        chosen = steps[0] if step == "first" else steps[-1] if step == "last" else int(step)
        if chosen not in steps:
            raise DataError(
                f"no rows with step {chosen} (steps present: {steps[0]}..{steps[-1]})", path
            )
        rows = [(s, r) for s, r in rows if s == chosen]
    info = {"file": str(path), "rows": len(rows), "step": chosen, "steps_in_file": len(steps)}
    return [r for _, r in rows], info


def _eos(samples: list[Sample]) -> list[bool] | None:
    flags = [s.has_eos for s in samples]
    return None if any(f is None for f in flags) else [bool(f) for f in flags]


@dataclass
class _WordFinding:
    token: str
    tuned_share: float


def run(config: DetectConfig) -> tuple[dict[str, Any], bool]:
    """Everything ``detect`` reports, as a JSON-ready dict, and whether anything is flagged."""
    from rlhfkit.hacking import Corpus, drift_signals, scan, word_frequency_shift
    from rlhfkit.hacking.text import phrase_tokens
    from rlhfkit.hacking.verdict import judge

    # 1. Read both sides.
    base_s, base_info = read_samples(config.base, config.base_step)
    tuned_s, tuned_info = read_samples(config.tuned, config.step)
    base_texts, tuned_texts = [s.response for s in base_s], [s.response for s in tuned_s]
    base, tuned = Corpus(base_texts), Corpus(tuned_texts)
    base_info["words"], tuned_info["words"] = base.n_words, tuned.n_words
    try:
        words = [" ".join(phrase_tokens(w)) for w in config.word]
        excluded = {" ".join(phrase_tokens(w)) for w in config.exclude}
    except ValueError as e:
        raise ConfigError(f"--word/--exclude: {e}") from None

    # 2. Scan every 1..max_n-gram, and the words asked for.
    result = scan(
        base, tuned, max_n=config.max_n, threshold=config.threshold, min_count=config.min_count,
        alpha=config.alpha, correction=config.correction, n_candidates=config.top,
    )  # fmt: skip
    flagged = [f for f in result.flagged if f.token not in excluded]
    kw = dict(threshold=config.threshold, min_count=config.min_count, alpha=config.alpha)
    word_results = [word_frequency_shift(base, tuned, w, **kw) for w in words]

    # 3. Drift signals.
    base_eos, tuned_eos = _eos(base_s), _eos(tuned_s)
    if base_eos is None or tuned_eos is None:
        base_eos = tuned_eos = None
    drift = drift_signals(base, tuned, base_eos, tuned_eos, alpha=config.alpha, seed=config.seed)

    # 4. Probe flagged tokens (and --word words) with the reward model.
    to_probe = [f.token for f in flagged[: config.probe_top]] + [w.word for w in word_results]
    probes = _probes(config, base_s, tuned_s, list(dict.fromkeys(to_probe)))

    any_flag = bool(flagged) or any(w.flagged for w in word_results) or bool(drift.flagged)
    # the --word words count as flagged findings for the verdict when their own test flags them
    findings = list(flagged) + [
        _WordFinding(w.word, w.tuned_share) for w in word_results if w.flagged
    ]
    verdict = judge(findings, drift, list(probes.values()))
    report = {
        "status": "flagged" if any_flag else "clean",
        "verdict": verdict.to_dict(),
        "flagged": [_with_probe(f.to_dict(), probes.get(f.token)) for f in flagged],
        "words": [_with_probe(w.to_dict(), probes.get(w.word)) for w in word_results],
        "candidates": [f.to_dict() for f in result.candidates],
        "drift": drift.to_dict(),
        "drift_flagged": [s.name for s in drift.flagged],
        "n_tested": result.n_tested,
        "base": base_info,
        "tuned": tuned_info,
        "settings": {
            "min_count": config.min_count, "alpha": config.alpha, "threshold": config.threshold,
            "max_n": config.max_n, "correction": config.correction,
            "reward_model": config.reward_model,
        },
    }  # fmt: skip
    return report, any_flag


def _probes(config: DetectConfig, base_s: list, tuned_s: list, tokens: list[str]) -> dict[str, Any]:
    """token -> the reward model's probe of it (none without --reward-model)."""
    from rlhfkit.hacking import probe_token

    if config.reward_model is None:
        return {}
    from rlhfkit.reward.model import RewardModel

    try:
        rm = RewardModel.from_pretrained(config.reward_model, trained=True, option="--reward-model")
    except (OSError, ValueError) as e:
        raise ConfigError(f"--reward-model {config.reward_model}: cannot load: {e}") from None

    def reward_fn(prompts: list[str], responses: list[str]) -> list[float]:
        return rm.score(prompts, responses, batch_size=config.batch_size).tolist()

    base_texts, tuned_texts = [s.response for s in base_s], [s.response for s in tuned_s]
    tuned_prompts, base_prompts = [s.prompt for s in tuned_s], [s.prompt for s in base_s]
    return {
        token: probe_token(
            reward_fn,
            tuned_prompts,
            base_texts,
            tuned_texts,
            token,
            base_prompts=base_prompts,
            alpha=config.alpha,
        )
        for token in tokens
    }


def _with_probe(d: dict[str, Any], probe: Any) -> dict[str, Any]:
    if probe is not None:
        d["probe_score_change"] = probe.score_change
        d["probe_score_change_std"] = probe.score_change_std
        d["probe"] = probe.to_dict()
    return d


def _fmt_p(p: float) -> str:
    return "<1e-300" if p == 0 else f"{p:.2g}"


def print_tables(report: dict[str, Any], top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 100))
    b, t = report["base"], report["tuned"]
    step = lambda info: f", step {info['step']}" if info["step"] is not None else ""  # noqa: E731
    console.print(
        f"base: {b['file']} ({b['rows']} responses, {b['words']} words{step(b)})\n"
        f"tuned: {t['file']} ({t['rows']} responses, {t['words']} words{step(t)})\n"
        f"{report['n_tested']} words and phrases tested ({report['settings']['correction']} correction)"
    )
    probe = any("probe_score_change" in f for f in report["flagged"] + report["words"])

    def token_table(
        title: str, rows: list[dict[str, Any]], name_key: str = "token", p_head: str = "p adj"
    ) -> Table:
        table = Table(title=title, title_justify="left")
        table.add_column("token", no_wrap=True)
        for col in ("count", "per 1k words", "ratio", "share of responses", p_head):
            table.add_column(col, justify="right", no_wrap=True)
        if probe:
            table.add_column("probe Δ std", justify="right", no_wrap=True)
        for r in rows[:top]:
            cells = [
                r[name_key], f"{r['base_count']} → {r['tuned_count']}", f"{r['base_rate']:.2f} → {r['tuned_rate']:.2f}",
                f"{r['ratio']:.1f}×", f"{r['base_share']:.0%} → {r['tuned_share']:.0%}",
                _fmt_p(r.get("p_adjusted", r["p_value"])),
            ]  # fmt: skip
            if probe:
                cells.append(
                    f"{r['probe_score_change_std']:+.2f}" if "probe_score_change_std" in r else ""
                )
            table.add_row(*cells, style="bold red" if r.get("flagged") else None)
        return table

    if report["flagged"]:
        console.print(token_table("Flagged: used far more often after tuning", report["flagged"]))
        for f in report["flagged"][:top]:
            if f["subsumed"]:
                console.print(f"  {f['token']!r} also covers: {', '.join(f['subsumed'][:8])}")
    elif report["candidates"]:
        console.print(token_table("Nothing flagged; strongest rises", report["candidates"][:5]))
    if report["words"]:
        console.print(token_table("Words asked for (--word)", report["words"], "word", "p"))
    drift = Table(title="Drift", title_justify="left")
    for col in ("signal", "base", "tuned", "p", "test", ""):
        drift.add_column(col, justify="right" if col in ("base", "tuned", "p") else "left")
    for name, s in report["drift"].items():
        p = "" if s["p_value"] is None else _fmt_p(s["p_value"])
        drift.add_row(
            name, f"{s['base']:.3g}", f"{s['tuned']:.3g}", p, s["test"], "FLAGGED" if s["flagged"] else "",
            style="bold red" if s["flagged"] else None,
        )  # fmt: skip
    console.print(drift)
    verdict = report["verdict"]
    color = {"healthy": "green", "suspicious": "yellow", "hacked": "bold red"}[verdict["label"]]
    console.print(f"verdict: [{color}]{verdict['label']}[/]")
    for reason in verdict["reasons"]:
        console.print(f"  {reason}", highlight=False)
    if report["status"] == "flagged":
        console.print("[bold red]possible reward hacking[/] (exit status 1)")
    else:
        console.print("[green]clean[/]: nothing flagged")


def main(argv: list[str]) -> int:
    config = parse_config(
        DetectConfig,
        argv,
        prog="rlhfkit detect",
        description=(
            "Compare tuned vs base responses and flag reward hacking. Exit status: 1 flagged, "
            "0 clean, 2 bad input."
        ),
    )
    report, flagged = run(config)
    if config.json:
        json.dump(report, sys.stdout, indent=2, ensure_ascii=False, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print_tables(report, config.top)
    return 1 if flagged else 0
