"""``clip-metric eval``: saved diffusers pipelines rendered and scored, on 1 and 2 devices."""

from __future__ import annotations

import json

import pytest

from clip_metric.cli import main
from clip_metric.compare import find_runs
from clip_metric.records import read_scores
from _helpers.diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")

COMMON = ["--max-prompts", "12", "--num-inference-steps", "2", "--accelerator", "cpu", "--precision", "32"]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    paths = []
    for k in range(2):
        path = root / f"checkpoint-{(k + 1) * 100}"
        build_tiny_pipeline(seed=k).save_pretrained(path)
        paths.append(path)
    return paths


def _eval(capsys, *argv):
    code = main(["eval", *COMMON, "--json", "--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


@pytest.mark.slow
def test_one_and_two_devices_give_the_same_scores_and_compare_reads_the_output(pipelines, tmp_path, capsys):
    one, err = _eval(capsys, *pipelines, "--output-dir", tmp_path / "one", "--model", "")
    two, _ = _eval(capsys, *pipelines, "--output-dir", tmp_path / "two", "--devices", "2")
    assert [p["step"] for p in one["pipelines"]] == [100, 200]
    for a, b in zip(one["pipelines"], two["pipelines"]):
        assert a["clip/count"] == b["clip/count"] == 12
        for key in ("clip/mean", "clip/mean_ci", "clip/min", "clip/max"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    # The second checkpoint is paired with the first, as during training.
    assert "clip/delta" not in one["pipelines"][0] and one["pipelines"][1]["clip/delta_count"] == 12
    first = read_scores(one["pipelines"][0]["score_file"])
    assert first.step == 100 and len(first.records) == 12 and first.header["stage"] == "eval"
    summary = json.loads((tmp_path / "one" / "checkpoint-200" / "summary.json").read_text())
    assert summary["clip/mean"] == one["pipelines"][1]["clip/mean"] and summary["signature"].startswith("clip-metric")
    runs = find_runs(tmp_path / "two")
    assert sorted(runs) == ["two/checkpoint-100", "two/checkpoint-200"]
    assert main(["compare", str(tmp_path / "two"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (pair,) = report["pairs"]
    assert pair["difference"] == pytest.approx(one["pipelines"][1]["clip/delta"], abs=1e-5)
    assert "embedded demo CLIP" in err  # no --model: the note says which model scored


@pytest.mark.slow
def test_a_unet_folder_on_top_of_a_base_pipeline(pipelines, tmp_path, capsys):
    from diffusers import DiffusionPipeline

    base, other = pipelines
    DiffusionPipeline.from_pretrained(other).unet.save_pretrained(tmp_path / "unet-only")
    combined = DiffusionPipeline.from_pretrained(base)
    combined.register_modules(unet=DiffusionPipeline.from_pretrained(other).unet)
    combined.save_pretrained(tmp_path / "combined")
    on_base, _ = _eval(capsys, "--base", base, tmp_path / "unet-only")
    whole, _ = _eval(capsys, tmp_path / "combined")
    assert on_base["pipelines"][0]["clip/mean"] == pytest.approx(whole["pipelines"][0]["clip/mean"], abs=1e-6)


@pytest.mark.slow
def test_target_ci_stops_early(pipelines, capsys):
    result, _ = _eval(capsys, pipelines[0], "--target-ci", "10", "--max-prompts", "200")
    (row,) = result["pipelines"]
    assert row["clip/count"] == 64 and row["rounds"] == 1


def test_the_progress_bar_is_drawn_unless_quiet(pipelines, capsys):
    assert main(["eval", str(pipelines[0]), *COMMON]) == 0
    captured = capsys.readouterr()
    assert "checkpoint-100" in captured.err and "prompt" in captured.err and "clip/mean" in captured.out
    _eval(capsys, pipelines[0])
    assert "prompt/s" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing-dir/"], "no such pipeline directory"),
        (["./nope"], "no such pipeline directory"),
        (["PARENT/missing"], "no such pipeline directory"),  # owner/name in form, but its folder exists
        (["PIPE", "PARENT/missing"], "no such pipeline directory"),  # the second is checked before the first renders
        (["EMPTY"], "not a diffusers pipeline directory (no model_index.json)"),
        (["PIPE/unet"], "a component folder such as unet/ goes on top of a pipeline: --base PIPELINE"),
        (["FILE"], "is a file; name a pipeline directory"),
        (["PIPE", "--prompts", "nope.txt"], "--prompts nope.txt: no such file"),
        (["PIPE", "--output-dir", "FILE"], "is a file; name a folder"),
        (["--base", "PIPE", "EMPTY"], "not a folder diffusers can load on top of --base"),
        (["--base", "PIPE", "PIPE/vae"], "holds a AutoencoderKL, which is not the base pipeline's denoiser (unet: UNet2DConditionModel)"),
        (["--base", "PIPE", "FILE"], "is a file; with --base"),
        (["--base", "EMPTY", "PIPE/unet"], "not a diffusers pipeline directory"),
    ],
)
def test_bad_inputs_are_errors_with_exit_code_2(pipelines, tmp_path, capsys, argv, message):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "EMPTY").mkdir()

    def resolve(a):
        a = a.replace("PARENT", str(pipelines[0].parent)).replace("PIPE", str(pipelines[0]))
        return str(tmp_path / a) if a in ("FILE", "EMPTY") else a

    code = main(["eval", *map(resolve, argv), *COMMON, "--output-dir", str(tmp_path / "out")]) if "--output-dir" not in argv \
        else main(["eval", *map(resolve, argv), *COMMON])
    captured = capsys.readouterr()
    assert code == 2 and message in captured.err, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not list(tmp_path.glob("out/**/*.jsonl"))  # nothing was rendered


@pytest.mark.parametrize(
    ("option", "value"), [("--height", "30"), ("--target-ci", "0"), ("--batch-size", "0"), ("--devices", "-1"),
                          ("--precision", "fp8")],
)
def test_bad_option_values_exit_2(pipelines, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(pipelines[0]), option, value])
    assert exit_info.value.code == 2 and option in capsys.readouterr().err


def test_a_lora_folder_needs_what_diffusers_needs(pipelines, tmp_path, capsys):
    pytest.importorskip("safetensors")
    import importlib.util

    if importlib.util.find_spec("peft") is not None:
        pytest.skip("peft is installed: a real LoRA would load")
    lora = tmp_path / "lora"
    lora.mkdir()
    from safetensors.torch import save_file
    import torch

    save_file({"unet.down_blocks.0.lora_A.weight": torch.zeros(2, 2)}, str(lora / "pytorch_lora_weights.safetensors"))
    assert main(["eval", "--base", str(pipelines[0]), str(lora), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err
    assert "PEFT" in err or "peft" in err


@pytest.mark.slow
def test_a_component_folder_is_named_after_its_checkpoint_and_nothing_is_overwritten(pipelines, tmp_path, capsys):
    base, other = pipelines
    result, _ = _eval(capsys, "--base", base, other / "unet", "--output-dir", tmp_path / "out")
    (row,) = result["pipelines"]
    assert row["step"] == 200 and row["score_file"].endswith("checkpoint-200/clip_scores/step-00000200.jsonl")
    again, _ = _eval(capsys, "--base", base, other / "unet", "--output-dir", tmp_path / "out")
    (row2,) = again["pipelines"]
    assert row2["score_file"].endswith("step-00000200-1.jsonl") and row2["summary_file"].endswith("summary-1.json")
    assert json.loads((tmp_path / "out" / "checkpoint-200" / "summary.json").read_text())["score_file"] == row["score_file"]


def test_target_ci_on_a_library_no_larger_than_min_prompts_warns(pipelines, capsys):
    with pytest.warns(UserWarning, match="changes nothing: the library has 12 prompts"):
        result, _ = _eval(capsys, pipelines[0], "--target-ci", "0.5")
    assert "-prefix:" not in result["pipelines"][0]["signature"]
