"""Scale-out on CPU: two processes compute what one process computes on the whole batch.

DDP over gloo, started by ``accelerate launch``: the step under test is the real
one, :class:`vigos.training.trainer.ViGOSTrainer` training for one optimizer step, with a
rollout that returns fixed completions (so the runs score the same tokens) and
random non-zero LoRA weights (so the student differs from the adapter-off teacher
and every term has a gradient). FSDP2 (``fully_shard``) over gloo, started by
``torchrun``, since Accelerate enables FSDP only on GPUs: the scorer on sharded
weights. The same checks cover gradient accumulation, gradient checkpointing and
bf16 in one process. This file is also the worker script:
``accelerate launch ... tests/test_distributed.py trainer OUT MODEL BATCH`` and
``torchrun ... tests/test_distributed.py fsdp OUT MODEL``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from peft import LoraConfig, get_peft_model
from PIL import Image
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from vigos.data.examples import ExampleDataset
from vigos.data.rows import Example
from vigos.method.teachers import make_teacher_policy
from vigos.models.modeling import unwrap
from vigos.training.config import ViGOSConfig
from vigos.training.recipe import language_lora_targets
from vigos.training.trainer import ViGOSTrainer

REPO = Path(__file__).resolve().parents[1]
CPU_DDP = REPO / "configs" / "accelerate" / "cpu_ddp.yaml"
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}

# Row → (colour, question, answer, completion). Three valid rollouts and one invalid
# one, of different lengths: whichever process gets the invalid row, the other has
# no reference-teacher token at all, and the per-process token counts differ, so a
# per-process mean would not equal the global one.
ROWS = [
    (
        (220, 30, 30),
        "What colour is the square?",
        "red",
        " A red square. </description>\n<think> It is red. </think>\n\\boxed{red}",
    ),
    (
        (30, 200, 30),
        "Which colour fills the image?",
        "green",
        " A green field, nothing else in it. </description>\n<think> The whole image is green. </think>\n"
        "\\boxed{green}",
    ),
    ((30, 30, 220), "Name the colour.", "blue", "blue, I think"),
    (
        (230, 220, 30),
        "What do you see?",
        "yellow",
        " Yellow. </description>\n<think> Yellow everywhere, so yellow. </think>\n\\boxed{yellow}",
    ),
]


def examples():
    return [
        Example(question=q, answer=a, image=Image.new("RGB", (112, 112), rgb), row=i, meta={})
        for i, (rgb, q, a, _) in enumerate(ROWS)
    ]


class FixedRollout:
    """Returns each row's fixed completion (token ids, ending with <|im_end|>), whatever the model."""

    def __init__(self, processor):
        tokenizer = processor.tokenizer
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.by_row = {
            i: tokenizer(text, add_special_tokens=False)["input_ids"] + [end] for i, (*_, text) in enumerate(ROWS)
        }

    def __call__(self, model, batch):
        return [list(self.by_row[e.row]) for e in batch]


class RecordingScorer:
    """Wraps the trainer's scorer; sums the global per-term values of the calls and keeps the rows they scored."""

    def __init__(self, scorer, reduce_sum):
        self.scorer = scorer
        self.reduce_sum = reduce_sum
        self.values: dict[str, float] = {}
        self.rows: list[int] = []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def __call__(self, model, batch, completions, **kwargs):
        scored = self.scorer(model, batch, completions, **kwargs)
        # Each process holds its share of every term (its tokens over the global count).
        for name, value in scored.terms.items():
            self.values[name] = self.values.get(name, 0.0) + float(self.reduce_sum(value.detach().reshape(1)))
        self.rows += [e.row for e in batch]
        return scored


def lora_model(model_dir: Path):
    """The tiny model with the same random non-zero LoRA weights in every process."""
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        init_lora_weights=False,
        target_modules=language_lora_targets(["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]),
    )
    return processor, get_peft_model(model, lora)


def one_step(model_dir: Path, out_dir: Path, per_device_batch: int, **options) -> dict:
    """One optimizer step of ViGOS on ROWS; returns (and saves per process) per-term values and LoRA gradients."""
    processor, model = lora_model(model_dir)
    if options.get("gradient_checkpointing"):
        model.enable_input_require_grads()
    args = ViGOSConfig(
        output_dir=str(out_dir / "run"),
        max_steps=1,
        per_device_train_batch_size=per_device_batch,
        learning_rate=1e-3,
        max_grad_norm=0.0,
        lora_dropout=0.0,
        token_loss_clip=None,
        description_end_clip=None,
        reasoning_start_clip=None,
        loss_chunk_size=7,
        teacher_batch_size=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        log_completions_steps=0,
        seed=0,
        dataloader_num_workers=0,
        **options,
    )
    grads: dict[str, torch.Tensor] = {}

    class KeepGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    trainer = ViGOSTrainer(
        model, args, ExampleDataset(examples()), processor, rollout=FixedRollout(processor), callbacks=[KeepGradients()]
    )
    recorder = RecordingScorer(trainer.scorer, trainer._reduce_sum)
    trainer.scorer = recorder
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h)
    result = {
        "terms": recorder.values,
        "rows": recorder.rows,
        "grads": grads,
        "logged": logged,
        "processes": trainer.accelerator.num_processes,
        "checkpointing": trainer.model.base_model.model.is_activation_checkpointing,
    }
    torch.save(result, out_dir / f"rank{trainer.accelerator.process_index}.pt")
    return result


# Rows per process in the FSDP run: both valid on one, one invalid on the other, so that with one
# sequence per teacher pass the two processes have different numbers of teacher passes to run.
FSDP_ROWS = [[0, 1], [3, 2]]


def sharded_score(model_dir: Path, out_dir: Path) -> dict:
    """Score FSDP_ROWS (all of them with one process) with the LoRA model sharded by FSDP2 when launched on
    several processes; backward; returns (and saves per process) the global per-term values and full gradients."""
    processor, model = lora_model(model_dir)
    world, rank = 1, 0
    if "RANK" in os.environ:
        # A mismatch of collectives fails after this long instead of hanging.
        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
        world, rank = dist.get_world_size(), dist.get_rank()
        mesh = init_device_mesh("cpu", (world,))
        # What Accelerate's TRANSFORMER_BASED_WRAP wraps: the model's own _no_split_modules.
        wrapped = set(unwrap(model)._no_split_modules)
        for module in model.modules():
            if type(module).__name__ in wrapped:
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)

    def reduce_sum(tensor):
        if world > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
        return tensor

    args = ViGOSConfig(
        output_dir=str(out_dir),
        report_to="none",
        token_loss_clip=None,
        description_end_clip=None,
        reasoning_start_clip=None,
        loss_chunk_size=7,
        teacher_batch_size=1,
        use_cpu=True,
    )
    scorer = args.build_scorer(
        processor, teacher=make_teacher_policy("fixed", model), reduce_sum=reduce_sum, lockstep=world > 1
    )
    rows = FSDP_ROWS[rank] if world > 1 else sorted(r for part in FSDP_ROWS for r in part)
    batch = [examples()[i] for i in rows]
    model.train()
    scored = scorer(model, batch, FixedRollout(processor)(model, batch))
    (scored.loss * world).backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            grads[name] = grad.detach().clone()
    result = {
        "terms": {k: float(reduce_sum(v.detach().reshape(1))) for k, v in scored.terms.items()},
        "grads": grads,
        "processes": world,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(result, out_dir / f"fsdp_rank{rank}.pt")
    if world > 1:
        dist.destroy_process_group()
    return result


def launch(args: list[str], *, timeout: float, module: bool = False, **env: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` with configs/accelerate/cpu_ddp.yaml (2 CPU processes), offline, one thread each."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_DDP)]
    command += ["-m", *args] if module else args
    return run_workers(command, timeout=timeout, **env)


def run_workers(command: list[str], *, timeout: float, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=REPO, env={**os.environ, **WORKER_ENV, **env}, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{command[2]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    return done


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_launch_config_passes_accelerates_checks(config):
    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "vigos.cli", "train"])
    args, defaults, _ = _validate_launch_command(args)
    layout = {"ddp": args.multi_gpu, "deepspeed": args.use_deepspeed, "fsdp": args.use_fsdp}
    kind = next((k for k in ("deepspeed", "fsdp") if k in config.stem), None if config.stem == "single_gpu" else "ddp")
    assert layout == {k: k == kind for k in layout}, config.stem
    assert args.num_machines == (2 if config.stem.startswith("multi_node") else 1)
    assert args.num_processes % args.num_machines == 0
    if args.use_deepspeed:
        # Left to the training config, so that DeepSpeed and the Trainer cannot disagree.
        assert "gradient_accumulation_steps" not in defaults.deepspeed_config
        assert "gradient_clipping" not in defaults.deepspeed_config


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_completions(tiny_model_dir, tmp_path):
    launch([__file__, "trainer", str(tmp_path), str(tiny_model_dir), "2"], timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = one_step(Path(tiny_model_dir), tmp_path / "single", per_device_batch=4)

    assert all(r["processes"] == 2 for r in ranks) and single["processes"] == 1
    # The two processes scored disjoint halves of the four rows; one process scored all of them.
    assert sorted(ranks[0]["rows"] + ranks[1]["rows"]) == sorted(single["rows"]) == [0, 1, 2, 3]
    assert all(v > 0 for v in single["terms"].values()), single["terms"]
    for name, value in single["terms"].items():
        assert ranks[0]["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
        assert ranks[1]["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    # DDP left the same gradient on both processes, and it is the one-process gradient.
    assert single["grads"] and set(ranks[0]["grads"]) == set(single["grads"])
    nonzero = 0
    for name, grad in single["grads"].items():
        torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name], rtol=0, atol=1e-7)
        # Stricter than the 1e-5 asked for: some LoRA gradients here are only ~1e-5 in size.
        torch.testing.assert_close(
            ranks[0]["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
        )
        nonzero += bool(grad.abs().max() > 0)
    assert nonzero == len(single["grads"]), "some LoRA weight got no gradient; the comparison would be vacuous"
    # The logged loss (the Trainer averages it over processes) and per-term values.
    for key in ["loss"] + [f"loss_{name}" for name in single["terms"]]:
        assert ranks[0]["logged"][key] == pytest.approx(single["logged"][key], rel=1e-5, abs=1e-7), key


def test_gradient_accumulation_matches_one_big_micro_batch(tiny_model_dir, tmp_path):
    """Micro-batches of 2 with 2 accumulation steps give the step that one micro-batch of 4 gives:
    each term is normalized by its tokens over the whole step, not per micro-batch."""
    whole = one_step(Path(tiny_model_dir), tmp_path / "whole", per_device_batch=4)
    accumulated = one_step(
        Path(tiny_model_dir), tmp_path / "accumulated", per_device_batch=2, gradient_accumulation_steps=2
    )
    for key in ["loss"] + [f"loss_{name}" for name in whole["terms"]] + ["valid_rate", "tokens_reference"]:
        assert accumulated["logged"][key] == pytest.approx(whole["logged"][key], rel=1e-5, abs=1e-7), key
    for name, grad in whole["grads"].items():
        torch.testing.assert_close(
            accumulated["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_micro_batch_normalization_averages_each_micro_batchs_own_means(tiny_model_dir, tmp_path):
    """`loss_normalization: micro_batch` (the release's way): each micro-batch's terms are means over its own
    tokens, and the step is their average; the invalid row sits in one micro-batch only, so this differs
    from the step-wide mean."""
    step = one_step(
        Path(tiny_model_dir),
        tmp_path / "mb",
        per_device_batch=2,
        gradient_accumulation_steps=2,
        loss_normalization="micro_batch",
    )
    processor, model = lora_model(Path(tiny_model_dir))
    config = ViGOSConfig(
        output_dir=str(tmp_path / "plain"),
        report_to="none",
        token_loss_clip=None,
        description_end_clip=None,
        reasoning_start_clip=None,
        loss_chunk_size=7,
    )
    scorer = config.build_scorer(processor, teacher=make_teacher_policy("fixed", model))
    rollout, rows = FixedRollout(processor), examples()
    scored = [
        scorer(model, batch, rollout(model, batch)).loss
        for batch in ([rows[i] for i in step["rows"][:2]], [rows[i] for i in step["rows"][2:]])
    ]
    expected = (scored[0] + scored[1]) / 2
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert step["logged"]["loss"] == pytest.approx(expected.item(), rel=1e-5)
    for name, grad in zip(lora, torch.autograd.grad(expected, list(lora.values()))):
        torch.testing.assert_close(
            step["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
        )
    whole = scorer(model, rows, rollout(model, rows)).loss
    assert abs(whole.item() - expected.item()) > 1e-3 * abs(expected.item())


def test_gradient_checkpointing_gives_the_same_step(tiny_model_dir, tmp_path):
    plain = one_step(Path(tiny_model_dir), tmp_path / "plain", per_device_batch=4)
    checkpointed = one_step(
        Path(tiny_model_dir), tmp_path / "checkpointed", per_device_batch=4, gradient_checkpointing=True
    )
    assert checkpointed["checkpointing"] and not plain["checkpointing"]
    assert checkpointed["terms"] == pytest.approx(plain["terms"], rel=1e-6)
    for name, grad in plain["grads"].items():
        torch.testing.assert_close(checkpointed["grads"][name], grad, rtol=1e-5, atol=1e-7)


def test_bf16_step_is_close_to_float32(tiny_model_dir, tmp_path):
    full = one_step(Path(tiny_model_dir), tmp_path / "fp32", per_device_batch=4)
    half = one_step(Path(tiny_model_dir), tmp_path / "bf16", per_device_batch=4, bf16=True)
    assert half["logged"]["loss"] == pytest.approx(full["logged"]["loss"], rel=2e-2)
    flat_full = torch.cat([g.flatten() for g in full["grads"].values()])
    flat_half = torch.cat([half["grads"][n].float().flatten() for n in full["grads"]])
    assert torch.isfinite(flat_half).all()
    assert torch.nn.functional.cosine_similarity(flat_full, flat_half, dim=0) > 0.99


@pytest.mark.slow
def test_fsdp2_sharded_scoring_matches_one_process(tiny_model_dir, tmp_path):
    """Sharded weights are gathered collectively in every forward pass: the processes must run as many
    passes as each other (``lockstep``) although their rows need different numbers of teacher passes."""
    run_workers(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            __file__,
            "fsdp",
            str(tmp_path),
            str(tiny_model_dir),
        ],
        timeout=300,
    )
    ranks = [torch.load(tmp_path / f"fsdp_rank{r}.pt") for r in range(2)]
    single = sharded_score(Path(tiny_model_dir), tmp_path / "single")
    assert [r["processes"] for r in ranks] == [2, 2] and single["processes"] == 1
    assert all(v > 0 for v in single["terms"].values())
    for rank in ranks:
        assert rank["terms"] == pytest.approx(single["terms"], rel=1e-5, abs=1e-7)
        for name, grad in single["grads"].items():
            torch.testing.assert_close(
                rank["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}"
            )


@pytest.mark.slow
def test_accelerate_launch_trains_the_tiny_model_on_two_processes(tmp_path):
    out = tmp_path / "run"
    launch(
        [
            "vigos.cli",
            "train",
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--save_steps",
            "2",
        ],
        timeout=300,
        module=True,
        VIGOS_CACHE=str(tmp_path / "cache"),
    )
    state = (out / "checkpoint-2" / "trainer_state.json").read_text()
    assert '"global_step": 2' in state
    # One RNG state per process, so that a resume restores each process's sampling.
    assert (out / "checkpoint-2" / "rng_state_0.pth").exists() and (out / "checkpoint-2" / "rng_state_1.pth").exists()
    assert (out / "adapter_model.safetensors").exists()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if sys.argv[1] == "trainer":
        one_step(Path(sys.argv[3]), Path(sys.argv[2]), int(sys.argv[4]))
    else:
        sharded_score(Path(sys.argv[3]), Path(sys.argv[2]))
