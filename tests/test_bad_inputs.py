"""Bad inputs are refused before any long work starts, with one error from the kit that names the
file or value, what is wrong and the fix (issue 23): fine-tune settings, generation settings,
prompts longer than the context, pictures, datasets that are not UTF-8, course parameters, and
damaged model folders. Each case is reproduced as a student meets it: the CLI through
``internvl_course.cli.main``, or the Python API as the notebooks call it."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from internvl_course import cli
from internvl_course.data.drawing import Piece, Scene, render
from internvl_course.data.validate import DatasetError
from internvl_course.finetune import presets
from internvl_course.model import preprocess
from internvl_course.model.folder import ModelFolderError
from internvl_course.model.preprocess import ImageLoadError, load_image
from internvl_course.serve import chat
from internvl_course.serve.chat import GenerationConfig


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under ``roots`` with its bytes: an input must stay byte-identical."""
    return {p: p.read_bytes() for root in roots for p in sorted(Path(root).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. Fine-tune settings: checked in settings_for, before a config is written or XTuner starts
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def training(tiny_model, tiny_llava_data) -> dict[str, Path]:
    data_path, image_folder = tiny_llava_data
    return {"model_path": tiny_model, "data_path": data_path, "image_folder": image_folder}


def refused_config(tmp_path: Path, error: type[Exception], match: str, **settings) -> str:
    """write_config refuses ``settings`` with ``match`` in its message and writes nothing."""
    config = tmp_path / "cfg.py"
    with pytest.raises(error, match=match) as refused:
        presets.write_config(config, "cpu-tiny", **settings)
    assert not config.exists(), "a refused config must not be written"
    return str(refused.value)


@pytest.mark.parametrize("name, value, match", [
    ("lr", -1, r"lr must be a number > 0, got -1"),
    ("lr", 0, r"lr must be a number > 0, got 0"),
    ("lr", math.nan, r"lr must be a number > 0, got nan"),
    ("lr", "3e-5", r"lr must be a number > 0, got '3e-5'"),
    ("lora_r", 0, r"lora_r must be a whole number >= 1, got 0"),
    ("lora_r", 8.5, r"lora_r must be a whole number >= 1, got 8.5"),
    ("lora_alpha", 0, r"lora_alpha must be a number > 0"),
    ("lora_dropout", 1.0, r"lora_dropout must be a number in \[0, 1\), got 1.0"),
    ("batch_size", 0, r"batch_size must be a whole number >= 1, got 0"),
    ("accumulative_counts", 0, r"accumulative_counts must be a whole number >= 1, got 0"),
    ("dataloader_num_workers", -1, r"dataloader_num_workers must be a whole number >= 0, got -1"),
    ("max_epochs", 0, r"max_epochs must be a number > 0, got 0"),
    ("max_length", 0, r"max_length must be a whole number >= 1, got 0"),
    ("max_length", 2048.5, r"max_length must be a whole number >= 1, got 2048.5"),
    ("warmup_ratio", 1.5, r"warmup_ratio must be a number in \[0, 1\), got 1.5"),
    ("weight_decay", -0.1, r"weight_decay must be a number >= 0"),
    ("max_norm", 0, r"max_norm must be a number > 0"),
    ("betas", (0.9, 1.2), r"betas must be two numbers in \[0, 1\), got \(0.9, 1.2\)"),
    ("save_steps", 0, r"save_steps must be a whole number >= 1, got 0"),
    ("save_total_limit", 0, r"save_total_limit must be -1 \(keep all\) or a whole number >= 1, got 0"),
    ("max_dynamic_patch", 0, r"max_dynamic_patch must be None \(the model's own\) or a whole number >= 1, got 0"),
    ("log_interval", 0, r"log_interval must be a whole number >= 1"),
    ("seed", "zero", r"seed must be a whole number"),
    ("freeze_llm", "no", r"freeze_llm must be True or False, got 'no'"),
    ("dist_backend", "mpi", r"dist_backend must be 'nccl' \(GPUs\) or 'gloo' \(CPU\), got 'mpi'"),
])
def test_a_setting_out_of_range_is_named_before_a_config_is_written(training, tmp_path, name, value, match):
    refused_config(tmp_path, ValueError, match, **{**training, name: value})


def test_a_missing_image_folder_is_named(training, tmp_path):
    message = refused_config(tmp_path, FileNotFoundError, "image_folder",
                             **{**training, "image_folder": tmp_path / "nowhere"})
    assert "nowhere is not a folder" in message and "image paths are relative to" in message


def test_an_image_folder_without_the_pictures_lists_them(training, tmp_path):
    empty = tmp_path / "pictures"
    empty.mkdir()
    message = refused_config(tmp_path, DatasetError, "missing_image", **{**training, "image_folder": empty})
    assert "'0.jpg': no such file under" in message and "'3.jpg'" in message and "4 problem(s)" in message


def test_a_missing_data_file_is_named(training, tmp_path):
    refused_config(tmp_path, FileNotFoundError, r"data_path .*nowhere.json does not exist",
                   **{**training, "data_path": tmp_path / "nowhere.json"})


def test_a_sivqa_file_given_as_training_data_says_how_to_convert_it(training, tmp_path, repo):
    sivqa = repo / "data" / "food" / "train.json"
    message = refused_config(tmp_path, DatasetError, "sivqa", **{**training, "data_path": sivqa,
                                                                  "image_folder": sivqa.parent})
    assert "LLaVA" in message and "internvl-course foodieqa" in message and "train_llava.json" in message


def test_a_gbk_training_file_says_how_to_resave_it(training, tmp_path):
    gbk = tmp_path / "data_gbk.json"
    gbk.write_bytes(Path(training["data_path"]).read_text(encoding="utf-8").encode("gbk"))
    message = refused_config(tmp_path, DatasetError, "not UTF-8", **{**training, "data_path": gbk})
    assert "data_gbk.json" in message and "iconv -f GBK -t UTF-8" in message


def test_a_missing_model_folder_is_named(training, tmp_path):
    refused_config(tmp_path, ModelFolderError, "model_path .*nowhere.* is not a folder",
                   **{**training, "model_path": tmp_path / "nowhere"})


def test_good_settings_still_write_a_config(training, tmp_path):
    config = presets.write_config(tmp_path / "cfg.py", "cpu-tiny", **training, lr=2, lora_r=8)
    settings = presets.read_settings(config)
    assert settings["lr"] == 2 and settings["lora_r"] == 8
    assert settings["max_iters"] == 4  # ceil(3.5 epochs x ceil(4 samples / batch 8))


# ---------------------------------------------------------------------------------------------
# 2. Generation settings: refused or converted when the GenerationConfig is made
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tiny_model):
    return chat.pipeline(tiny_model, backend="transformers", quiet=True)


@pytest.fixture(scope="module")
def picture():
    return render(Scene(pieces=(Piece("circle", "red", 2),)), seed=3)


def test_whole_numbers_are_accepted_where_floats_are_meant(pipe, picture):
    config = GenerationConfig(temperature=2, top_p=1, repetition_penalty=1, max_new_tokens=4, seed=0)
    assert (config.temperature, config.top_p, config.repetition_penalty) == (2.0, 1.0, 1.0)
    assert all(type(v) is float for v in (config.temperature, config.top_p, config.repetition_penalty))
    assert isinstance(config.for_transformers()["temperature"], float)
    reply = pipe.chat(("Describe.", picture), gen_config=config).response  # transformers once refused an int
    assert 1 <= reply.generate_token_len <= 4


@pytest.mark.parametrize("settings, match", [
    ({"top_k": 2.5}, r"top_k must be >= 0 \(a whole number; 0 = no limit\), got 2.5"),
    ({"max_new_tokens": "16"}, r"max_new_tokens must be at least 1 \(a whole number\), got '16'"),
    ({"max_new_tokens": 16.0}, r"max_new_tokens must be at least 1 \(a whole number\), got 16.0"),
    ({"max_new_tokens": True}, r"max_new_tokens must be at least 1 \(a whole number\), got True"),
    ({"temperature": math.nan}, r"temperature must be >= 0 and finite \(0 = greedy\), got nan"),
    ({"temperature": math.inf}, r"temperature must be >= 0 and finite \(0 = greedy\), got inf"),
    ({"temperature": "0.7"}, r"temperature must be >= 0 and finite \(0 = greedy\), got '0.7'"),
    ({"temperature": -0.5}, r"temperature must be >= 0 and finite \(0 = greedy\), got -0.5"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\] \(1 keeps every token\), got 1.5"),
    ({"top_p": math.nan}, r"top_p must be in \(0, 1\] \(1 keeps every token\), got nan"),
    ({"repetition_penalty": 0}, r"repetition_penalty must be > 0 and finite \(1 = none\), got 0"),
    ({"seed": 1.5}, r"seed must be None or a whole number >= 0, got 1.5"),
    ({"seed": -1}, r"seed must be None or a whole number >= 0, got -1"),
    ({"ignore_eos": "yes"}, r"ignore_eos must be True or False, got 'yes'"),
])
def test_bad_generation_settings_are_named_with_their_range(settings, match):
    with pytest.raises(ValueError, match=f"GenerationConfig: {match}"):
        GenerationConfig(**settings)


# ---------------------------------------------------------------------------------------------
# 3. Prompts longer than the context: refused with the numbers before the model runs
# ---------------------------------------------------------------------------------------------


def test_a_huge_question_is_refused_in_a_second_with_the_numbers(pipe, picture):
    assert pipe.session_len == 8192  # the tiny model's max_position_embeddings
    start = time.perf_counter()
    with pytest.raises(chat.PromptTooLongError) as refused:
        pipe.chat(("菜" * 100_000, picture))
    assert time.perf_counter() - start < 5, "the length is checked before the model runs"
    message = str(refused.value)
    assert "100000 tokens for this question" in message and "context of 8192 tokens" in message
    assert "shorter question" in message and "max_num" in message and "new session" in message


def test_a_picture_of_many_tiles_in_a_short_context_is_refused_and_fewer_tiles_fit(tiny_model, picture):
    wide = picture.resize((1792, 896))  # 4 x 2 tiles and a thumbnail: 9 x 256 tokens
    short = chat.pipeline(tiny_model, backend="transformers", session_len=1000, quiet=True)
    with pytest.raises(chat.PromptTooLongError, match=r"2304 tokens for the picture \(9 tiles of 256\)"):
        short.chat(("Describe.", wide), gen_config=GenerationConfig(max_new_tokens=4))
    few = chat.pipeline(tiny_model, backend="transformers", session_len=1000, max_num=1, quiet=True)
    reply = few.chat(("Describe.", wide), gen_config=GenerationConfig(max_new_tokens=4)).response
    assert 1 <= reply.generate_token_len <= 4


def test_a_conversation_that_outgrows_the_context_asks_for_a_new_session(tiny_model, picture):
    one_tile = chat.pipeline(tiny_model, backend="transformers", max_num=1, quiet=True)
    first = one_tile.prompt_tokens(("Describe.", picture))
    small = chat.pipeline(tiny_model, backend="transformers", session_len=first + 100, max_num=1, quiet=True)
    config = GenerationConfig(max_new_tokens=8)
    session = small.chat(("Describe.", picture), gen_config=config)
    with pytest.raises(chat.PromptTooLongError, match="1 earlier turn.*new session") as refused:
        small.chat("菜" * 100, session=session, gen_config=config)
    assert f"context of {first + 100} tokens" in str(refused.value)
    assert len(session.history) == 1, "a refused turn leaves the session as it was"


def test_the_reply_stops_where_the_context_ends(tiny_model, picture):
    """session_len is honoured by transformers too: the reply gets the room that is left."""
    one_tile = chat.pipeline(tiny_model, backend="transformers", max_num=1, quiet=True)
    length = one_tile.prompt_tokens(("Describe.", picture))
    small = chat.pipeline(tiny_model, backend="transformers", session_len=length + 5, max_num=1, quiet=True)
    reply = small.chat(("Describe.", picture), gen_config=GenerationConfig(max_new_tokens=64, ignore_eos=True))
    assert (reply.response.generate_token_len, reply.response.finish_reason) == (5, "length")


def test_the_counted_length_is_the_prompt_the_model_reads(pipe, picture, monkeypatch):
    seen: list[int] = []
    generate = pipe.model.generate

    def record(*args, input_ids=None, **kwargs):
        seen.append(input_ids.shape[1])
        return generate(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(pipe.model, "generate", record)
    config = GenerationConfig(max_new_tokens=4)
    counted = [pipe.prompt_tokens(("Describe.", picture))]
    session = pipe.chat(("Describe.", picture), gen_config=config)
    counted.append(pipe.prompt_tokens("And the plate?", session))
    pipe.chat("And the plate?", session=session, gen_config=config)
    counted.append(pipe.prompt_tokens("你好"))
    pipe.chat("你好", gen_config=config)
    assert counted == seen


def test_an_lmdeploy_backend_refuses_before_the_engine_is_asked(pipe, picture):
    """The same check guards LMDeploy (here a stand-in engine that must not be called: no GPU)."""

    class Engine:
        def chat(self, *args, **kwargs):
            raise AssertionError("the engine was asked")

        __call__ = session = chat

    stub = object.__new__(chat.ChatPipeline)
    stub.__dict__.update({**pipe.__dict__, "backend": "pytorch", "engine": Engine()})
    for call in (lambda: stub.chat(("菜" * 9000, picture)), lambda: list(stub.stream_chat(("菜" * 9000, picture))),
                 lambda: stub.batch(["Describe.", ("菜" * 9000, picture)])):
        with pytest.raises(chat.PromptTooLongError, match="context of 8192 tokens"):
            call()


def test_a_bad_session_len_is_named(tiny_model):
    with pytest.raises(ValueError, match="session_len must be None .* or a whole number >= 1, got 0"):
        chat.pipeline(tiny_model, backend="transformers", session_len=0, quiet=True)


# ---------------------------------------------------------------------------------------------
# 4. Pictures: web addresses and pictures too large to be worth decoding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["https://example.com/dish.jpg", "http://example.com/a b.png"])
def test_a_web_address_says_to_download_it_first(pipe, address):
    with pytest.raises(ImageLoadError, match="is a web address.*local files.*curl -L -o") as refused:
        load_image(address)
    assert address in str(refused.value)
    with pytest.raises(ImageLoadError, match="is a web address"):
        pipe.chat(("Describe.", address))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels but holds one row: the size is read from its
    header, so a refusal that comes before decoding never notices the missing rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(9000, 8000), (13000, 13000), (20000, 20000)])
def test_a_picture_over_the_pixel_limit_is_refused_from_its_header(tmp_path, width, height):
    """72 MP (PIL accepts it silently), 169 MP (PIL warns, then decodes 1.1 GB) and 400 MP (PIL raises)."""
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(width, height))
    for source in (path, path.read_bytes()):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not surface either
            with pytest.raises(ImageLoadError) as refused:
                load_image(source)
        message = str(refused.value)
        assert f"{width}x{height}" in message and f"{width * height / 1e6:.0f} megapixels" in message
        assert f"limit is {preprocess.MAX_PIXELS / 1e6:.0f} megapixels" in message and "resize" in message


def test_the_pixel_limit_is_inclusive(tmp_path, monkeypatch):
    path = tmp_path / "square.png"
    Image.new("RGB", (100, 100), "red").save(path)
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100 * 100)
    assert load_image(path, max_num=1).shape[0] == 1
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100 * 100 - 1)
    with pytest.raises(ImageLoadError, match=r"square.png has more pixels than the kit reads: 100x100"):
        load_image(path)


# ---------------------------------------------------------------------------------------------
# 5. Datasets that are not UTF-8: the file, the problem and the iconv command
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def gbk_dataset(tmp_path, repo) -> Path:
    """A copy of the kit's test split whose test.json was saved as GBK (Chinese Windows' encoding)."""
    root = tmp_path / "food"
    source = repo / "data" / "food"
    items = json.loads((source / "test.json").read_text(encoding="utf-8"))[:4]
    for item in items:
        target = root / item["food_meta"]["food_file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / item["food_meta"]["food_file"], target)
    (root / "test.json").write_bytes(json.dumps(items, ensure_ascii=False).encode("gbk"))
    return root


def expect_encoding_message(message: str, path: Path) -> None:
    assert str(path) in message and "not UTF-8" in message and "GBK" in message
    assert f"iconv -f GBK -t UTF-8 {path}" in message


def test_data_check_names_a_gbk_file(gbk_dataset, capsys):
    before = snapshot(gbk_dataset)
    assert cli.main(["data", "check", "--root", str(gbk_dataset)]) == 1
    expect_encoding_message(capsys.readouterr().out, gbk_dataset / "test.json")
    assert snapshot(gbk_dataset) == before


def test_foodieqa_names_a_gbk_file(gbk_dataset, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert cli.main(["foodieqa", str(gbk_dataset / "test.json"), "--out", str(out)]) == 1
    expect_encoding_message(capsys.readouterr().err, gbk_dataset / "test.json")
    assert not out.exists()


def test_evaluation_loading_names_a_gbk_file(gbk_dataset):
    from internvl_course.data import food_vqa, foodieqa

    for load in (lambda: food_vqa.load_split("test", gbk_dataset),
                 lambda: foodieqa.load_foodieqa(gbk_dataset / "test.json")):
        with pytest.raises(DatasetError) as refused:
            load()
        expect_encoding_message(str(refused.value), gbk_dataset / "test.json")


# ---------------------------------------------------------------------------------------------
# 6. Course parameters: a misspelt name stops the run before any notebook starts
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_notebook_runs(monkeypatch):
    from internvl_course.course import runner

    def refuse(*args, **kwargs):
        raise AssertionError("a notebook ran")

    monkeypatch.setattr(runner, "run_notebook", refuse)


def test_a_misspelt_parameter_stops_the_run(tmp_path, no_notebook_runs):
    params = tmp_path / "params.yaml"
    params.write_text("03:\n  max_nums: 6\n")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--only", "03", "--params", str(params), "--out", str(tmp_path / "out")])
    message = str(stopped.value.code)
    assert stopped.value.code not in (0, None)
    assert "max_nums" in message and "03_dynamic_resolution_and_pixel_shuffle.ipynb" in message
    assert "max_num, " in message  # the notebook's own names, to pick from
    assert not (tmp_path / "out").exists()


def test_an_unknown_notebook_in_the_parameters_stops_the_run(tmp_path, no_notebook_runs):
    params = tmp_path / "params.json"
    params.write_text('{"42": {"max_num": 6}}')
    with pytest.raises(SystemExit, match="notebook 42.*00, 01, 02"):
        cli.main(["run", "--params", str(params)])


def test_the_smoke_parameters_are_all_known():
    from internvl_course.course import plan, runner

    runner.check_params(plan.SMOKE_PARAMS)  # raises if a notebook lost a parameter the smoke run sets


def test_a_notebook_refuses_a_name_that_is_not_one_of_its_parameters(tmp_path, monkeypatch):
    """In a notebook (nbval runs the cells as they are) a global that is not a parameter is no
    parameter either: overriding ``np`` is a typo, not a setting."""
    from internvl_course.course.notebook import PARAMS_ENV, apply_params

    params = tmp_path / "params.yaml"
    params.write_text("03:\n  np: 6\n")
    monkeypatch.setenv(PARAMS_ENV, str(params))
    namespace = {"np": object(), "max_num": 12}
    with pytest.raises(NameError, match="np not defined in notebook 03"):
        apply_params("03", namespace)
    assert namespace["max_num"] == 12


# ---------------------------------------------------------------------------------------------
# 7. Damaged model folders: config.json and safetensors, through pipeline() and convert
# ---------------------------------------------------------------------------------------------


def damaged_copy(tiny_model: Path, folder: Path, name: str, data: bytes) -> Path:
    shutil.copytree(tiny_model, folder)
    (folder / name).write_bytes(data)
    return folder


def refused_by_convert(capsys: pytest.CaptureFixture, base: Path, tmp_path: Path, match: str) -> None:
    """``internvl-course convert`` refuses the base folder: non-zero, the reason on stderr, nothing written."""
    code = cli.main(["convert", str(base), str(tmp_path / "iter_1.pth"), str(tmp_path / "out")])
    assert code not in (0, None)
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def _safetensors(tiny_model: Path) -> tuple[bytes, int, dict]:
    data = (tiny_model / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return data, length, json.loads(data[8:8 + length])


def _with_header(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def _damaged_weights(tiny_model: Path) -> dict[str, tuple[bytes, str]]:
    data, length, header = _safetensors(tiny_model)
    body = data[8 + length:]
    first = next(name for name in header if name != "__metadata__")
    no_offsets = {**header, first: {k: v for k, v in header[first].items() if k != "data_offsets"}}
    wrong_shape = {**header, first: {**header[first], "shape": [3, 3]}}
    return {
        "empty": (b"", "model.safetensors is 0 bytes, too short"),
        "cut in the header": (data[:100], "model.safetensors is incomplete: it ends inside its header"),
        "cut in the data": (data[:len(data) // 2], r"model.safetensors is incomplete: .* of .*GB"),
        "garbage": (b"\xff" * 4096, "does not start with a safetensors header"),
        "header not an object": (_with_header([1, 2], body), "damaged safetensors header"),  # type: ignore[arg-type]
        "no data offsets": (_with_header(no_offsets, body),
                            f"damaged safetensors header: tensor {first}: data_offsets None"),
        "shape and size disagree": (_with_header(wrong_shape, body), f"{first}: .*shape \\[3, 3\\]"),
        "extra bytes": (data + b"\0" * 16, "16 bytes more than its header describes"),
        "a Git LFS pointer": (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64
                              + b"\nsize 4700000\n", "model.safetensors is a Git LFS pointer .* run `git lfs pull`"),
    }


@pytest.mark.parametrize("case", ["empty", "cut in the header", "cut in the data", "garbage", "header not an object",
                                  "no data offsets", "shape and size disagree", "extra bytes", "a Git LFS pointer"])
def test_damaged_weights_are_named_by_pipeline_and_convert(tiny_model, tmp_path, capsys, case):
    data, match = _damaged_weights(tiny_model)[case]
    folder = damaged_copy(tiny_model, tmp_path / "m", "model.safetensors", data)
    before = snapshot(folder)
    with pytest.raises(ModelFolderError, match=match):
        chat.pipeline(folder, backend="transformers", quiet=True)
    refused_by_convert(capsys, folder, tmp_path, match)
    assert snapshot(folder) == before


@pytest.mark.parametrize("data, match", [
    (b"", r"config.json is not valid JSON \(Expecting value, line 1 column 1\)"),
    (b'{"architectures": ["InternVLChatModel"], "llm_con', r"config.json is not valid JSON"),
    ('{"template": "模板"}'.encode("gbk"), r"config.json is not UTF-8 text"),
    (b"[1, 2]", r"config.json holds a JSON list, not an object"),
    (b'{"architectures": ["InternVLChatModel"], "template": "internlm2-chat", "llm_config": {}}',
     r"config.json: an InternVLChatModel config needs the objects vision_config and llm_config"),
])
def test_a_damaged_config_is_named_by_pipeline_and_convert(tiny_model, tmp_path, capsys, data, match):
    folder = damaged_copy(tiny_model, tmp_path / "m", "config.json", data)
    with pytest.raises(ModelFolderError, match=match):
        chat.pipeline(folder, backend="transformers", quiet=True)
    refused_by_convert(capsys, folder, tmp_path, match)
