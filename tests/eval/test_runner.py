"""The evaluation runner end to end: a tiny real model, fixture copies of the benchmarks, a real judge server."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from eval_runs import BENCHMARKS, lines_of, make_config
from judge_server import JudgeServer
from vigos.eval.benchmarks import load_benchmark
from vigos.eval.run_folder import EvalError, read_responses
from vigos.eval.runner import run_eval
from vigos.grading.answers import extract_answer

HAS_REPORT = importlib.util.find_spec("vigos.eval.report") is not None

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_model_and_processor) -> dict[str, Any]:
    """The tiny model and processor (loaded once, in conftest.py) as `run_eval`'s keyword arguments, for runs
    given a model object rather than a path."""
    model, processor = tiny_model_and_processor
    return {"model": model, "processor": processor}


def texts_by_id(run_dir: Path, benchmark: str) -> dict[str, list[str]]:
    return {r["id"]: [s["text"] for s in r["samples"]] for r in lines_of(run_dir / "responses" / f"{benchmark}.jsonl")}


class Unusable:
    """Stands in for a model and processor that a run must never touch (everything is already done)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the run used the model ({name}) although every item was already done")


# --- a full run, resumed --------------------------------------------------------------------------


def test_run_writes_responses_summary_and_resumes_without_resampling(tiny_model_dir, data_dir, tmp_path):
    out = tmp_path / "run"
    config = make_config(tiny_model_dir, data_dir, out)
    summary = run_eval(config, progress=False)

    for benchmark in BENCHMARKS:
        records = lines_of(out / "responses" / f"{benchmark}.jsonl")
        items = load_benchmark(benchmark, data_dir)
        assert [r["id"] for r in records] == [item.id for item in items]
        for record, item in zip(records, items):
            assert record["benchmark"] == benchmark and record["answer"] == item.answer
            assert record["options"] == item.options and record["conflict"] == item.conflict
            assert len(record["samples"]) == 2 and record["correct"] == [s["correct"] for s in record["samples"]]
            for sample in record["samples"]:
                assert sample["text"].startswith("<description>")
                assert sample["answer"] == extract_answer(sample["text"], item.options)
                assert isinstance(sample["correct"], bool)

    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["benchmarks"] == BENCHMARKS and summary["items"] == {"vilp-f": 3, "mathvista": 2, "cvbench": 2}
    assert (summary["k"], summary["n_samples"], summary["seed"], summary["engine"]) == (2, 2, 0, "hf")
    assert summary["sampling"] == {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "max_new_tokens": 12}
    assert summary["model_source"] == {"base": str(tiny_model_dir), "adapter": None}
    assert {"vigos", "torch", "transformers", "peft"} <= set(summary["versions"])
    assert summary["judge"]["used"] is False and "note" not in summary["judge"]
    for benchmark in BENCHMARKS:
        block = summary["metrics"]["benchmarks"][benchmark]
        for metric in ("pass@2", "avg@2"):
            assert 0.0 <= block[metric]["low"] <= block[metric]["mean"] <= block[metric]["high"] <= 1.0
    assert summary["metrics"]["mean"]["n_benchmarks"] == 3
    assert summary["vilp"]["vilp-f"]["score"]["n"] == 2 and summary["vilp"]["vilp-f"]["prior"]["n"] == 1
    if HAS_REPORT:
        assert (out / "report.html").is_file() and (out / "report.md").is_file()

    # Everything is done: a re-run rewrites the summary from the files and never touches a model.
    before = {b: (out / "responses" / f"{b}.jsonl").read_bytes() for b in BENCHMARKS}
    again = run_eval(config, model=Unusable(), processor=Unusable(), progress=False, report=False)
    assert again["metrics"] == summary["metrics"] and again["vilp"] == summary["vilp"]
    assert {b: (out / "responses" / f"{b}.jsonl").read_bytes() for b in BENCHMARKS} == before

    # A kill mid-write leaves half a line: the re-run drops it and samples only that item again.
    # vilp-f's third item is a batch of its own (batch_size 2), so it is redrawn with the same seed.
    path = out / "responses" / "vilp-f.jsonl"
    complete = path.read_bytes()
    two_lines = complete[: complete.index(b"\n", complete.index(b"\n") + 1) + 1]
    path.write_bytes(two_lines + complete[len(two_lines) : len(two_lines) + 40])
    run_eval(config, progress=False, report=False)
    assert [r["id"] for r in lines_of(path)] == ["0-1", "0-2", "0-3"]
    assert path.read_bytes() == complete


def test_resumed_run_samples_what_an_uninterrupted_run_samples(tiny_model_dir, loaded, data_dir, tmp_path):
    whole = make_config(tiny_model_dir, data_dir, tmp_path / "whole", benchmarks=["vilp-f"])
    run_eval(whole, progress=False, report=False, **loaded)
    # The first batch only, then the rest: `limit` is not a sampling setting, so the folder resumes.
    partial = make_config(tiny_model_dir, data_dir, tmp_path / "parts", benchmarks=["vilp-f"], limit=2)
    run_eval(partial, progress=False, report=False, **loaded)
    assert len(lines_of(tmp_path / "parts" / "responses" / "vilp-f.jsonl")) == 2
    rest = make_config(tiny_model_dir, data_dir, tmp_path / "parts", benchmarks=["vilp-f"])
    summary = run_eval(rest, progress=False, report=False, **loaded)
    assert summary["items"] == {"vilp-f": 3}
    assert (tmp_path / "parts" / "summary.json").is_file() and not (tmp_path / "parts" / "report.html").exists()
    assert texts_by_id(tmp_path / "parts", "vilp-f") == texts_by_id(tmp_path / "whole", "vilp-f")


def test_run_folder_with_other_sampling_settings_is_refused(tiny_model_dir, loaded, data_dir, tmp_path):
    first = make_config(tiny_model_dir, data_dir, tmp_path, benchmarks=["cvbench"], limit=1)
    run_eval(first, progress=False, report=False, **loaded)
    with pytest.raises(EvalError, match=r"other settings \(temperature: 1\.0 -> 0\.7\)"):
        run_eval(
            make_config(tiny_model_dir, data_dir, tmp_path, benchmarks=["cvbench"], temperature=0.7),
            progress=False,
            report=False,
        )


def test_truncated_last_line_is_dropped_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "bench.jsonl"
    good = [{"id": "a", "correct": [True]}, {"id": "b", "correct": [False]}]
    text = "".join(json.dumps(record) + "\n" for record in good)
    path.write_text(text + '{"id": "c", "corr')
    assert list(read_responses(path)) == ["a", "b"]
    assert path.read_text() == text
    assert list(read_responses(path)) == ["a", "b"]  # nothing more to drop

    # A complete record whose newline was not written yet is redone too: the file must end on a newline.
    path.write_text(text + json.dumps({"id": "c", "correct": [True]}))
    assert list(read_responses(path)) == ["a", "b"] and path.read_text() == text

    path.write_text('{"id": "a", "correct": [true]}\nnot json\n{"id": "b", "correct": [true]}\n')
    with pytest.raises(EvalError, match=r"bench\.jsonl:2: not a JSON record"):
        read_responses(path)
    path.write_text('{"id": "a"}\n')
    with pytest.raises(EvalError, match=r"bench\.jsonl:1: not a responses record"):
        read_responses(path)
    assert read_responses(tmp_path / "missing.jsonl") == {}


# --- a LoRA adapter ---------------------------------------------------------------------------------


def test_adapter_directory_loads_base_plus_adapter(tiny_model_dir, data_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from vigos.models.loading import load_model_and_processor
    from vigos.training.recipe import language_lora_targets

    model, _ = load_model_and_processor(str(tiny_model_dir))
    lora = LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, target_modules=language_lora_targets(["q_proj", "v_proj", "o_proj"])
    )
    adapter_dir = tmp_path / "adapter"
    get_peft_model(model, lora).save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]

    base = run_eval(
        make_config(tiny_model_dir, data_dir, tmp_path / "base", benchmarks=["mathvista"]), progress=False, report=False
    )
    tuned = run_eval(
        make_config(adapter_dir, data_dir, tmp_path / "tuned", benchmarks=["mathvista"]), progress=False, report=False
    )
    assert tuned["model_source"] == {"base": str(tiny_model_dir), "adapter": str(adapter_dir)}
    assert base["model_source"]["adapter"] is None
    # Same seeds, same batches: only the adapter's weights can make the samples differ.
    assert texts_by_id(tmp_path / "tuned", "mathvista") != texts_by_id(tmp_path / "base", "mathvista")


def test_adapter_without_base_model_is_a_clear_error(data_dir, tmp_path):
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    (adapter_dir / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(EvalError, match="names no base_model_name_or_path"):
        run_eval(make_config(adapter_dir, data_dir, tmp_path / "run", benchmarks=["cvbench"]), progress=False)


# --- the LLM judge ----------------------------------------------------------------------------------


@pytest.fixture
def yes_judge() -> Iterator[JudgeServer]:
    judge = JudgeServer()
    yield judge
    judge.close()


def test_judge_graded_items_take_the_judges_verdicts(tiny_model_dir, loaded, data_dir, tmp_path, yes_judge):
    out = tmp_path / "judged"
    config = make_config(
        tiny_model_dir, data_dir, out, benchmarks=["mmvet"], judge_url=yes_judge.base_url, judge_model="judge-model"
    )
    summary = run_eval(config, progress=False, report=False, **loaded)
    records = lines_of(out / "responses" / "mmvet.jsonl")
    asked = {(r["question"], r["answer"], s["text"]) for r in records for s in r["samples"]}
    assert len(yes_judge.requests) == len(asked) >= 2  # one request per distinct (question, reference, response)
    for record in records:
        assert record["grading"] == "judge" and record["correct"] == [True, True]
        assert all("rule_correct" in sample for sample in record["samples"])
    prompts_sent = [request["messages"][-1]["content"] for request in yes_judge.requests]
    assert all(request["model"] == "judge-model" for request in yes_judge.requests)
    assert any(records[0]["answer"] in prompt and records[0]["samples"][0]["text"] in prompt for prompt in prompts_sent)
    assert summary["judge"]["used"] is True and summary["judge"]["model"] == "judge-model"
    assert summary["metrics"]["benchmarks"]["mmvet"]["avg@2"]["mean"] == 1.0

    # Finished items are neither sampled nor judged again.
    run_eval(config, model=Unusable(), processor=Unusable(), progress=False, report=False)
    assert len(yes_judge.requests) == len(asked)


def test_summary_records_the_judge_url_without_credentials(tiny_model_dir, loaded, data_dir, tmp_path, yes_judge):
    # A key in the query (as some hosted APIs take it) reaches the judge but not summary.json.
    url = yes_judge.base_url + "?api_key=sk-secret-9&api-version=2024-02"
    config = make_config(
        tiny_model_dir,
        data_dir,
        tmp_path / "query",
        benchmarks=["mmvet"],
        limit=1,
        judge_url=url,
        judge_model="judge-model",
    )
    summary = run_eval(config, progress=False, report=False, **loaded)
    assert summary["judge"]["used"] is True and yes_judge.requests
    kept = yes_judge.base_url + "?api-version=2024-02"
    assert summary["judge"]["url"] == summary["config"]["judge_url"] == kept
    assert "sk-secret-9" not in (tmp_path / "query" / "summary.json").read_text()
    # user:pass@ in a URL, the judge's or the server's, is dropped too (cvbench needs no judge: none is asked).
    config = make_config(
        tiny_model_dir,
        data_dir,
        tmp_path / "userinfo",
        benchmarks=["cvbench"],
        limit=1,
        judge_url="http://judge-user:hunter2@127.0.0.1:1/v1",
        judge_model="judge-model",
        server_url="https://srv:pw-7@10.0.0.5:8000?token=t",
    )
    summary = run_eval(config, progress=False, report=False, **loaded)
    assert summary["config"]["judge_url"] == "http://127.0.0.1:1/v1"
    assert summary["config"]["server_url"] == "https://10.0.0.5:8000"
    text = (tmp_path / "userinfo" / "summary.json").read_text()
    assert "hunter2" not in text and "judge-user" not in text and "pw-7" not in text


def test_without_a_judge_the_summary_says_rule_verdicts_stood_in(tiny_model_dir, loaded, tmp_path):
    data = tmp_path / "data" / "open-qa"
    data.mkdir(parents=True)
    Image.new("RGB", (10, 10), "red").save(data / "red.png")
    rows = [{"id": f"q{i}", "question": "What colour is it?", "answer": "red", "image": "red.png"} for i in range(2)]
    (data / "rows.jsonl").write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    spec = tmp_path / "open-qa.yaml"
    spec.write_text(
        "name: open-qa\nfile: rows.jsonl\ngrader: judge\n"
        "fields: {id: id, question: question, answer: answer, image: image}\n",
        encoding="utf-8",
    )
    config = make_config(tiny_model_dir, tmp_path / "data", tmp_path / "run", benchmarks=[str(spec)], n_samples=3)
    summary = run_eval(config, progress=False, report=False, **loaded)
    assert summary["judge"]["used"] is False and summary["judge"]["items"] == 2
    assert "no judge was used" in summary["judge"]["note"]
    record = lines_of(tmp_path / "run" / "responses" / "open-qa.jsonl")[0]
    assert record["grading"] == "rule" and len(record["samples"]) == 3  # n > k: unbiased Pass@k
    assert (summary["k"], summary["n_samples"]) == (2, 3) and "pass@2" in summary["metrics"]["mean"]


def test_mmvet_without_a_judge_stops_before_the_model_loads(data_dir, tmp_path):
    config = make_config("tiny:never-loaded", data_dir, tmp_path / "run", benchmarks=["cvbench", "mmvet"])
    with pytest.raises(
        EvalError,
        match=r"^mmvet: the official protocol grades these with an LLM judge's 0-1 partial "
        r"credit.*--judge-url and --judge-model",
    ):
        run_eval(config, progress=False)
    assert not (tmp_path / "run").exists()


# --- the server engine, against vigos's own OpenAI-compatible server --------------------------------


def test_server_engine_samples_each_item_with_its_seed_and_hot_loads_an_adapter(
    tiny_model_dir, loaded, data_dir, tmp_path
):
    import torch
    from peft import LoraConfig, get_peft_model

    from vigos.data.rows import Example
    from vigos.eval.engines import item_seed
    from vigos.models.loading import load_model_and_processor
    from vigos.rollout.hf import HFGenerateRollout, SamplingParams
    from vigos.serve.server import PolicyServer, running
    from vigos.training.recipe import language_lora_targets

    server_model, server_processor = load_model_and_processor(str(tiny_model_dir))
    with running(PolicyServer(server_model.eval(), server_processor, model_name="tiny")) as url:
        config = make_config(
            tiny_model_dir, data_dir, tmp_path / "base", benchmarks=["mathvista"], engine="server", server_url=url
        )
        summary = run_eval(config, progress=False, report=False)
        assert summary["engine"] == "server"
        served = texts_by_id(tmp_path / "base", "mathvista")
        # Each item is one request with its own seed: what the in-process model samples with that seed.
        params = SamplingParams(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            num_samples=config.k,
        )
        rollout = HFGenerateRollout(loaded["processor"], params)
        tokenizer = loaded["processor"].tokenizer
        for item in load_benchmark("mathvista", data_dir):
            torch.manual_seed(item_seed(config.seed, "mathvista", item.id) % 2**31)
            example = Example(question=item.prompt_question(), answer=item.answer, image=item.image, row=0, meta={})
            completions = rollout(loaded["model"], [example])
            assert served[item.id] == [
                "<description>" + t for t in tokenizer.batch_decode(completions, skip_special_tokens=True)
            ]

        model, _ = load_model_and_processor(str(tiny_model_dir))
        lora = LoraConfig(
            r=4,
            lora_alpha=8,
            init_lora_weights=False,
            target_modules=language_lora_targets(["q_proj", "v_proj", "o_proj"]),
        )
        get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
        run_eval(
            make_config(
                tmp_path / "adapter",
                data_dir,
                tmp_path / "tuned",
                benchmarks=["mathvista"],
                engine="server",
                server_url=url,
            ),
            progress=False,
            report=False,
        )
        assert texts_by_id(tmp_path / "tuned", "mathvista") != served


def test_server_engine_needs_a_reachable_url(tiny_model_dir, data_dir, tmp_path):
    with pytest.raises(ValueError, match="--server-url"):
        make_config(tiny_model_dir, data_dir, tmp_path / "x", engine="server")
    config = make_config(
        tiny_model_dir,
        data_dir,
        tmp_path / "y",
        benchmarks=["mathvista"],
        engine="server",
        server_url="http://127.0.0.1:9",
    )
    with pytest.raises(EvalError, match="127.0.0.1:9"):
        run_eval(config, progress=False, report=False)


# --- several images per item ------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [False, True])
def test_each_image_of_an_item_reaches_the_processor_unless_tiled(tiny_model_dir, loaded, tmp_path, monkeypatch, tile):
    from vigos.eval.fixtures import write_fixture
    from vigos.models import modeling
    from vigos.rollout import hf

    write_fixture("mmsi", tmp_path / "data", n=2)  # two views per item
    shown: list[int] = []

    def encode(processor: Any, image: Any) -> Any:
        encoded = modeling.encode_image(processor, image)
        shown.append(encoded.count)
        return encoded

    monkeypatch.setattr(hf, "encode_image", encode)
    config = make_config(tiny_model_dir, tmp_path / "data", tmp_path / "run", benchmarks=["mmsi"], tile_images=tile)
    summary = run_eval(config, progress=False, report=False, **loaded)
    assert summary["items"] == {"mmsi": 2} and summary["config"]["tile_images"] is tile
    # The processor got two images per item (image_grid_thw of two rows), or one tiled picture.
    assert shown and set(shown) == ({1} if tile else {2})


# --- graded as the benchmarks' authors grade ------------------------------------------------------------


def test_mathvista_asks_its_query_with_the_hint_and_prints_choices_once(tmp_path):
    from vigos.eval.fixtures import write_fixture

    write_fixture("mathvista", tmp_path, n=2)
    choice, free = load_benchmark("mathvista", tmp_path)
    assert choice.question.startswith("Question: ") and choice.prompt_question().count("A. ") == 1
    assert free.question.startswith("Question: ") and free.options is None


def test_cvbench_summary_carries_its_own_overall_score(tiny_model_dir, loaded, tmp_path):
    from vigos.eval.fixtures import write_fixture

    write_fixture("cvbench", tmp_path / "data", n=6)  # 2D rows from ADE20K and COCO, 3D from Omni3D
    config = make_config(tiny_model_dir, tmp_path / "data", tmp_path / "run", benchmarks=["cvbench"])
    block = run_eval(config, progress=False, report=False, **loaded)["metrics"]["benchmarks"]["cvbench"]
    assert set(block["by_split"]) == {"ADE20K", "COCO", "Omni3D"}
    means = {source: block["by_split"][source]["avg@2"]["mean"] for source in block["by_split"]}
    expected = ((means["ADE20K"] + means["COCO"]) / 2 + means["Omni3D"]) / 2
    assert block["official"]["avg@2"] == pytest.approx(expected)
