from __future__ import annotations

import logging

import pytest
import torch

from clip_metric import ClipEncoder
from clip_metric.text import check_prompts
from _helpers.reference import drawn_scenes, embedding, hf_reference_scores
from _helpers.data import PROMPTS
from _helpers.models import TOKENIZER_DIR


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


def test_loads_local_directory_frozen_in_eval(encoder):
    assert not encoder.model.training
    assert all(not p.requires_grad for p in encoder.model.parameters())
    assert encoder.context_length == 77
    assert encoder.active_precision == "32"


def test_scores_match_hugging_face_reference_without_resize(encoder, tiny_clip_dir):
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = encoder.score(images, PROMPTS)
    reference = hf_reference_scores(tiny_clip_dir, images, PROMPTS)
    assert torch.allclose(ours, reference, atol=1e-4), (ours - reference).abs().max()


def test_scores_match_hugging_face_reference_with_resize_and_crop(encoder, tiny_clip_dir, uint8_images):
    # 48x64 -> shortest edge 32 (bicubic, antialiased) -> 32x32 center crop.
    ours = encoder.score(uint8_images, PROMPTS)
    reference = hf_reference_scores(tiny_clip_dir, uint8_images, PROMPTS)
    assert (ours - reference).abs().max() <= 1e-3


def test_preprocessing_matches_processor_pixels_when_no_resize(encoder, tiny_clip_dir):
    from PIL import Image
    from transformers import AutoImageProcessor

    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir)
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    expected = processor(images=pil, return_tensors="pt")["pixel_values"]
    assert torch.allclose(encoder.preprocess(images), expected, atol=1e-5)


def test_text_cache_runs_text_tower_once_per_prompt(tiny_clip_dir):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    first = encoder.encode_texts(PROMPTS[:3] + PROMPTS[:3])
    assert encoder.text_forward_count == 1
    assert encoder.text_cache_len == 3
    second = encoder.encode_texts(list(reversed(PROMPTS[:3])))
    assert encoder.text_forward_count == 1
    assert torch.equal(second, first[:3].flip(0))


def test_text_cache_is_bounded(tiny_clip_dir):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32", text_cache_size=2)
    encoder.encode_texts(PROMPTS[:4])
    assert encoder.text_cache_len == 2


def test_long_prompt_keeps_end_of_text_token(encoder, caplog):
    long_prompt = "a very detailed painting of " + "a small red fox and " * 40 + "a big moon"
    tokenizer = encoder.tokenizer
    ids = tokenizer(long_prompt)["input_ids"]
    assert len(ids) > 77
    manual = torch.tensor([ids[:76] + [tokenizer.eos_token_id]])
    with torch.no_grad():
        expected = embedding(encoder.model.get_text_features(input_ids=manual))
    expected = expected / expected.norm(dim=-1, keepdim=True)
    before = encoder.truncated_prompt_count
    with caplog.at_level(logging.WARNING, logger="clip_metric"):
        ours = encoder.encode_texts([long_prompt])
    assert torch.allclose(ours, expected, atol=1e-6)
    assert encoder.truncated_prompt_count == before + 1
    assert "truncated" in caplog.text
    # Naive slicing of the ids (dropping the end-of-text token) gives a different embedding.
    with torch.no_grad():
        sliced = embedding(encoder.model.get_text_features(input_ids=torch.tensor([ids[:77]])))
    sliced = sliced / sliced.norm(dim=-1, keepdim=True)
    assert not torch.allclose(sliced, expected, atol=1e-3)


def test_default_precision_close_to_fp32_on_a_trained_model():
    # A trained model, matching images and captions: the regime CLIP scores are read in. (The
    # full-size architectures are checked by benchmarks/bench_throughput.py.)
    from clip_metric.demos.tiny_clip import embedded_model_path

    images, captions = drawn_scenes(96, seed=7)
    fast = ClipEncoder.from_pretrained(embedded_model_path())  # "auto"
    exact = ClipEncoder.from_pretrained(embedded_model_path(), precision="32")
    if fast.active_precision == "32":
        pytest.skip("this CPU has no fast bf16: the default is fp32")
    diff = (fast.score(images, captions) - exact.score(images, captions)).abs().max()
    assert 0 < diff <= 2e-3


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precisions_close_to_fp32(tiny_clip_dir, uint8_images, precision):
    fast = ClipEncoder.from_pretrained(tiny_clip_dir, precision=precision)
    exact = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    assert fast.active_precision == precision
    diff = (fast.score(uint8_images, PROMPTS) - exact.score(uint8_images, PROMPTS)).abs().max()
    assert diff <= 1e-2


def test_preloaded_model_with_processor_pair(tiny_clip_dir, uint8_images):
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_clip_dir, dtype=torch.float32)
    pair = (AutoTokenizer.from_pretrained(tiny_clip_dir), AutoImageProcessor.from_pretrained(tiny_clip_dir))
    preloaded = ClipEncoder.build(model, pair, precision="32")
    loaded = ClipEncoder.build(tiny_clip_dir, precision="32")
    assert torch.allclose(preloaded.score(uint8_images, PROMPTS), loaded.score(uint8_images, PROMPTS), atol=1e-6)
    assert ClipEncoder.build(loaded) is loaded


def test_siglip_model_works_with_max_length_padding(tmp_path):
    from transformers import CLIPTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    config = SiglipConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
    )
    model = SiglipModel(config)
    tokenizer = CLIPTokenizerFast.from_pretrained(TOKENIZER_DIR)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    encoder = ClipEncoder(model, tokenizer, processor, precision="32")
    assert encoder.context_length == 64
    assert encoder.transform.size == (32, 32) and encoder.transform.crop is None
    images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    scores = encoder.score(images, ["a cat", "a dog on a red sofa"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_rejects_non_clip_model():
    with pytest.raises(TypeError, match="get_image_features"):
        ClipEncoder(torch.nn.Linear(2, 2), tokenizer=None)


def test_missing_local_directory_is_named_as_missing(tmp_path):
    with pytest.raises(OSError, match="nowhere': no such directory"):
        ClipEncoder.from_pretrained(tmp_path / "nowhere")


def test_a_file_is_not_a_model_directory(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(OSError, match="a file, not a model directory"):
        ClipEncoder.from_pretrained(tmp_path / "weights.bin")


def test_directory_without_a_model_says_how_to_fix(tmp_path):
    with pytest.raises(OSError, match="save_pretrained"):
        ClipEncoder.from_pretrained(tmp_path)


def test_processor_rejected_with_a_path(tiny_clip_dir):
    with pytest.raises(ValueError, match="preloaded"):
        ClipEncoder.build(tiny_clip_dir, processor=object())


@pytest.mark.parametrize(
    "prompts, message",
    [([], "empty list"), (["ok", ""], "prompt 1 to be non-empty"), (["ok", 3], "prompt 1 to be a string"),
     (None, "list of strings")],
)
def test_bad_prompts(prompts, message):
    with pytest.raises(ValueError, match=message):
        check_prompts(prompts)


def test_image_prompt_count_mismatch(encoder, uint8_images):
    with pytest.raises(ValueError, match="6 images and 2 prompts"):
        encoder.score(uint8_images, PROMPTS[:2])


def test_bad_precision_and_cache_size(tiny_clip_dir):
    with pytest.raises(ValueError, match="precision"):
        ClipEncoder.from_pretrained(tiny_clip_dir, precision="int8")
    with pytest.raises(ValueError, match="text_cache_size"):
        ClipEncoder.from_pretrained(tiny_clip_dir, text_cache_size=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encoder_follows_device_and_matches_cpu(tiny_clip_dir, uint8_images):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    cpu = encoder.score(uint8_images, PROMPTS)
    encoder.to("cuda")
    gpu = encoder.score(uint8_images, PROMPTS)
    assert gpu.device.type == "cuda"
    # uint8 is resized in uint8 on the CPU and in float on the GPU: they differ by that rounding.
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)


def test_cache_prompts_encodes_ahead_in_batches(tiny_clip_dir):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    encoder.cache_prompts(PROMPTS * 2, batch_size=4)
    assert encoder.text_forward_count == 2 and encoder.text_cache_len == len(PROMPTS)
    reference = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32").encode_texts(PROMPTS)
    assert torch.allclose(encoder.encode_texts(PROMPTS), reference, atol=1e-6)
    assert encoder.text_forward_count == 2


def test_cache_prompts_groups_prompts_of_similar_length(tiny_clip_dir):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    long_prompt = "a very detailed oil painting of an old lighthouse on a cliff above a stormy sea at dusk"
    prompts = [long_prompt, "a cat", long_prompt + " with gulls", "a dog", long_prompt + " in winter", "a fox"]
    widths = []
    hook = encoder.model.text_model.register_forward_pre_hook(
        lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    encoder.cache_prompts(prompts, batch_size=3)
    hook.remove()
    lengths = sorted(len(ids) for ids in encoder.token_ids(prompts))
    # Short prompts share one batch, long ones the other: padding only to each group's longest.
    assert widths == [(3, lengths[2]), (3, lengths[5])]
    # Sorting is invisible to the caller: each prompt gets its own embedding.
    one_by_one = torch.cat([ClipEncoder.from_pretrained(tiny_clip_dir, precision="32").encode_texts([p]) for p in prompts])
    assert torch.allclose(encoder.encode_texts(prompts), one_by_one, atol=1e-5)
    assert encoder.text_forward_count == 2


def test_cache_prompts_skips_cached_prompts_and_checks_batch_size(tiny_clip_dir):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    encoder.encode_texts(PROMPTS[:2])
    rows = []
    hook = encoder.model.text_model.register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    encoder.cache_prompts(PROMPTS)
    assert rows == [len(PROMPTS) - 2] and encoder.text_cache_len == len(PROMPTS)
    encoder.cache_prompts(PROMPTS)
    hook.remove()
    assert rows == [len(PROMPTS) - 2]
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match="Expected `batch_size` to be a positive int"):
            encoder.cache_prompts(PROMPTS, batch_size=bad)


def test_cache_prompts_keeps_the_prompts_it_was_given(tiny_clip_dir):
    # A full cache drops its least recently used prompts, never the ones requested now.
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32", text_cache_size=4)
    encoder.encode_texts(PROMPTS[:4])
    encoder.cache_prompts([PROMPTS[0], PROMPTS[4], PROMPTS[5]])
    forwards = encoder.text_forward_count
    encoder.encode_texts([PROMPTS[0], PROMPTS[4], PROMPTS[5]])
    assert encoder.text_forward_count == forwards
    assert encoder.text_cache_len == 4


def test_loading_leaves_the_global_generators_alone(tiny_clip_dir):
    # transformers 4.x initialises weights from the global generators before loading them (5.x
    # does not): a metric built inside a training script must not shift the run's random stream.
    # CI runs the suite on both.
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    ClipEncoder.from_pretrained(tiny_clip_dir)
    assert torch.equal(torch.rand(4), expected)


def test_pickle_weights_that_would_run_code_are_refused(tiny_clip_dir, tmp_path):
    import os
    import pickle
    import shutil

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("true",))

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_clip_dir, model_dir)
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    with open(model_dir / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"weight": RunsCode()}, handle)
    with pytest.raises(OSError, match="a pickle that would run code to load, and are refused"):
        ClipEncoder.from_pretrained(model_dir)


def test_pickling_an_encoder_loaded_by_name_stores_its_source_not_its_weights(tiny_clip_dir):
    import io

    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32", text_cache_size=7)
    buffer = io.BytesIO()
    torch.save(encoder, buffer)
    assert buffer.tell() < 20_000  # the tiny model's weights alone are several hundred kB
    copy = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert copy is not encoder and (copy.precision, copy.text_cache_size) == ("32", 7)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(copy.score(images, PROMPTS[:2]), encoder.score(images, PROMPTS[:2]))


def test_pickling_a_preloaded_model_carries_its_weights(tiny_clip_dir):
    import pickle

    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_clip_dir)
    encoder = ClipEncoder.build(
        model, (AutoTokenizer.from_pretrained(tiny_clip_dir), AutoImageProcessor.from_pretrained(tiny_clip_dir)),
        precision="32",
    )
    copy = pickle.loads(pickle.dumps(encoder))
    assert torch.equal(next(copy.model.parameters()), next(model.parameters()))


def test_truncation_warns_once_as_a_user_warning(tiny_clip_dir):
    import warnings

    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    long_prompts = ["a photo of " + "a very long and detailed scene " * 20 + str(i) for i in range(3)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode_texts(long_prompts[:1])
        encoder.encode_texts(long_prompts[1:])
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1 and issubclass(truncation[0].category, UserWarning)
    assert encoder.truncated_prompt_count == 3
