"""The command line of the trainers: renamed options still work for one release, with a line that
says so, on the command line, in YAML files and in checkpoints written under the old names."""

from __future__ import annotations

import pytest

from rlhfkit.cli._common import parse_config
from rlhfkit.ppo import PPOConfig
from rlhfkit.ppo.state import resume_mismatches
from rlhfkit.runtime.renamed import upgrade_settings

REQUIRED = ["--policy", "p", "--prompts", "q.jsonl", "--out", "o", "--reward-fn", "m:f"]


def test_old_flags_read_as_the_new_ones_with_a_deprecation_line(capsys):
    cfg = parse_config(
        PPOConfig,
        [*REQUIRED, "--lr-schedule", "constant", "--ppo-epochs=2", "--adam-eps", "1e-6",
         "--max-bad-updates", "5", "--keep-checkpoints", "3"],
        prog="rlhfkit ppo",
    )  # fmt: skip
    assert (cfg.lr_scheduler_type, cfg.num_ppo_epochs, cfg.adam_epsilon) == ("constant", 2, 1e-6)
    assert (cfg.max_bad_steps, cfg.save_total_limit) == (5, 3)
    err = capsys.readouterr().err
    for old, new in [("--lr-schedule", "--lr-scheduler-type"), ("--ppo-epochs", "--num-ppo-epochs"),
                     ("--adam-eps", "--adam-epsilon"), ("--max-bad-updates", "--max-bad-steps"),
                     ("--keep-checkpoints", "--save-total-limit")]:  # fmt: skip
        assert f"rlhfkit ppo: {old} is deprecated, use {new}" in err


def test_the_new_names_parse_silently_and_keep_all_is_none(capsys):
    cfg = parse_config(
        PPOConfig, [*REQUIRED, "--num-ppo-epochs", "3", "--save-total-limit", "None"], prog="p"
    )
    assert cfg.num_ppo_epochs == 3 and cfg.save_total_limit is None
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="--save-total-limit must be > 0"):
        PPOConfig(policy="p", prompts="q", out="o", save_total_limit=0)


def test_old_yaml_keys_read_as_the_new_ones(tmp_path, capsys):
    yaml = tmp_path / "run.yaml"
    yaml.write_text("lr-schedule: constant\nppo_epochs: 2\nkeep_checkpoints: 1\n", encoding="utf-8")
    cfg = parse_config(PPOConfig, [*REQUIRED, "--config", str(yaml)], prog="rlhfkit ppo")
    assert (cfg.lr_scheduler_type, cfg.num_ppo_epochs, cfg.save_total_limit) == ("constant", 2, 1)
    assert "option 'lr-schedule' is deprecated, use 'lr_scheduler_type'" in capsys.readouterr().err


def test_a_checkpoint_written_under_the_old_names_resumes():
    now = {**PPOConfig(policy="p", prompts="q", out="o").__dict__, "critic": "head",
           "chat_template": False}  # fmt: skip
    old = {**now}
    for new, name in (("num_ppo_epochs", "ppo_epochs"), ("lr_scheduler_type", "lr_schedule")):
        old[name] = old.pop(new)
    assert resume_mismatches(old, now, 1, 1) == []
    old["ppo_epochs"] = 8
    assert resume_mismatches(old, now, 1, 1) == ["num_ppo_epochs: checkpoint 8, now 4"]
    assert upgrade_settings({"keep_checkpoints": 0}) == {"save_total_limit": None}


def test_chat_template_shorthands():
    parse = lambda *a: parse_config(PPOConfig, [*REQUIRED, *a], prog="p").chat_template  # noqa: E731
    assert parse() == "auto"
    assert parse("--no-chat-template") == "never"
    assert parse("--chat-template") == "always"  # the bare flag of earlier `generate`
    assert parse("--chat-template", "--seed", "1") == "always"
    assert parse("--chat-template", "never") == "never"
