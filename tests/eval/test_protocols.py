"""The evaluation protocol as an option: checked, recorded in run.json, summary.json and the report, kept on
resume, flagged when runs of two protocols are compared; and the verbatim prompt file."""

from __future__ import annotations

import json

import pytest

from eval_runs import lines_of, make_config
from vigos.eval.compare import compare_runs
from vigos.eval.options import EvalConfig
from vigos.eval.protocols import DEFAULT_PROTOCOL, PROTOCOLS, mixed_protocols
from vigos.eval.run_folder import EvalError
from vigos.eval.runner import run_eval
from vigos.prompts import DESCRIPTION_OPEN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_protocol_values_are_checked(tmp_path):
    assert DEFAULT_PROTOCOL == "official" and set(PROTOCOLS) == {"official", "paper"}
    assert EvalConfig.__dataclass_fields__["protocol"].default == DEFAULT_PROTOCOL
    with pytest.raises(ValueError, match=r"^protocol must be one of official, paper, got 'papers'"):
        make_config("m", tmp_path, tmp_path, protocol="papers")
    with pytest.raises(ValueError, match=r"^bad_rows must be one of skip, error"):
        make_config("m", tmp_path, tmp_path, bad_rows="ignore")


def test_prompt_file_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"^prompt_file .*missing.txt does not exist"):
        make_config("m", tmp_path, tmp_path, prompt_file=str(tmp_path / "missing.txt"))
    no_question = tmp_path / "no_question.txt"
    no_question.write_text("Answer the question.", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^prompt_file must contain \{question\}"):
        make_config("m", tmp_path, tmp_path, prompt_file=str(no_question))
    good = tmp_path / "good.txt"
    good.write_text("{question}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not both"):
        make_config("m", tmp_path, tmp_path, prompt_file=str(good), student_prompt="Q: {question}")


def test_the_run_records_its_protocol_and_a_resume_keeps_it(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    summary = run_eval(make_config(tiny_model_dir, data_dir, out, benchmarks=["cvbench"]), progress=False)
    assert summary["protocol"] == "official" and summary["config"]["protocol"] == "official"
    assert json.loads((out / "run.json").read_text())["settings"]["protocol"] == "official"
    assert "**Protocol:** official: each benchmark's own prompt fields" in (out / "report.md").read_text()
    with pytest.raises(EvalError, match=r"protocol: 'official' -> 'paper'"):
        # (the run folder refuses it before the judge is ever asked)
        paper = make_config(
            tiny_model_dir,
            data_dir,
            out,
            benchmarks=["cvbench"],
            protocol="paper",
            judge_url="http://127.0.0.1:1/v1",
            judge_model="judge",
        )
        run_eval(paper, progress=False)


def test_a_prompt_file_is_the_whole_user_turn_without_a_prefill(tiny_model_dir, data_dir, tmp_path):
    template = tmp_path / "prompt.txt"
    template.write_text("Look closely.\n{question}\nReply in \\boxed{}.\n", encoding="utf-8")
    out = tmp_path / "run"
    config = make_config(tiny_model_dir, data_dir, out, benchmarks=["cvbench"], prompt_file=str(template), k=1)
    run_eval(config, progress=False, report=False)
    record = lines_of(out / "responses" / "cvbench.jsonl")[0]
    assert record["prompt"] == f"Look closely.\n{record['question']}\nReply in \\boxed{{}}.\n"  # verbatim
    assert not record["samples"][0]["text"].startswith(DESCRIPTION_OPEN)
    assert json.loads((out / "run.json").read_text())["settings"]["prompt_prefill"] == ""
    # The default student spec pre-fills every completion with the description tag.
    default = make_config(tiny_model_dir, data_dir, tmp_path / "default", benchmarks=["cvbench"], k=1)
    run_eval(default, progress=False, report=False)
    default_record = lines_of(tmp_path / "default" / "responses" / "cvbench.jsonl")[0]
    assert default_record["samples"][0]["text"].startswith(DESCRIPTION_OPEN)


def test_comparing_runs_of_two_protocols_is_flagged(tmp_path):
    assert mixed_protocols([{"protocol": "paper"}, {}], ["a", "b"]).startswith(
        "The runs were evaluated under different protocols (a: paper, b: official)"
    )
    assert mixed_protocols([{"protocol": "official"}, {}], ["a", "b"]) is None
    block = {"n": 1, "pass@1": {"mean": 0.5, "low": 0.0, "high": 1.0, "n": 1}}
    block["avg@1"] = dict(block["pass@1"])
    for name, protocol in (("a", "official"), ("b", "paper")):
        folder = tmp_path / name
        folder.mkdir()
        summary = {"run_name": name, "k": 1, "protocol": protocol, "metrics": {"benchmarks": {"x": block}}}
        summary["metrics"]["mean"] = {"n_benchmarks": 1, "pass@1": block["pass@1"], "avg@1": block["avg@1"]}
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    paths = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    text = paths["md"].read_text()
    assert "different protocols (a: official, b: paper)" in text and "| paper |" in text


def test_the_resume_command_repeats_the_protocol_and_the_prompt_file(tmp_path):
    import argparse

    from vigos.eval.command import add_eval_arguments
    from vigos.eval.runner import _resume_command

    template = tmp_path / "prompt.txt"
    template.write_text("{question}", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    argv = ["--model", "m", "--benchmarks", "cvbench", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)]
    args = parser.parse_args([*argv, "--protocol", "paper", "--prompt-file", str(template), "--bad-rows", "error"])
    config = make_config("m", tmp_path, tmp_path, protocol="paper", prompt_file=str(template), bad_rows="error")
    command = _resume_command(args, config)
    assert "--protocol paper" in command and f"--prompt-file {template}" in command and "--bad-rows error" in command
    default = _resume_command(parser.parse_args(argv), make_config("m", tmp_path, tmp_path))
    assert "--protocol" not in default and "--bad-rows" not in default
