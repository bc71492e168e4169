"""The arithmetic behind the benchmark figures and the offline bundle, checked on a CPU.

The GPU runs themselves happen on a GPU machine (``.gpujobs``); what is checked here is what
turns their timings into figures (FLOPs, MFU, decode windows, ratios, tables) and what decides
which wheels a bundle holds, so that a wrong figure cannot come from a slip in the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import chat_throughput  # noqa: E402
import report  # noqa: E402
import train_throughput  # noqa: E402

from internvl_course.course import wheelhouse  # noqa: E402

# ---------------------------------------------------------------------------------------------
# report: tables, sizes, child processes
# ---------------------------------------------------------------------------------------------


def test_table_aligns_numbers_right_and_shows_missing_figures_as_na():
    rows = [{"name": "tutorial", "mfu": 0.1072, "gb": 24.18}, {"name": "24gb", "mfu": None, "gb": 10.4}]
    table = report.format_table(rows, [("name", "preset", ""), ("mfu", "MFU", ".1%"), ("gb", "peak GB", ".2f")])
    assert table.splitlines() == [
        "| preset   |   MFU | peak GB |",
        "|----------|------:|--------:|",
        "| tutorial | 10.7% |   24.18 |",
        "| 24gb     |   n/a |   10.40 |",
    ]


def test_sizes_parse_or_say_the_expected_form():
    assert report.parse_size("800x600") == (800, 600) and report.parse_size("1792X1344") == (1792, 1344)
    for bad in ("800", "0x600", "axb"):
        with pytest.raises(argparse.ArgumentTypeError, match="800x600|positive"):
            report.parse_size(bad)


def test_a_child_result_comes_back_and_a_failure_brings_its_log_tail(monkeypatch):
    ok = [sys.executable, "-c", "print('log line'); print('RESULT ' + '{\"x\": 1}')"]
    assert report.run_child(ok) == {"x": 1}
    with pytest.raises(report.ChildFailed, match="status 3[\\s\\S]*went wrong"):
        report.run_child([sys.executable, "-c", "import sys; print('went wrong'); sys.exit(3)"])
    with pytest.raises(report.ChildFailed, match="printed no result"):
        report.run_child([sys.executable, "-c", "print('nothing')"])
    # A child that sleeps 30 times its timeout: stopped, whatever the machine's load.
    with pytest.raises(report.ChildFailed, match="`.*time.sleep.*` ran past 1 s and was stopped"):
        report.run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    # What a stopped child had printed comes back too (as bytes: subprocess does not decode it then).
    # A real child might not have printed it yet when its timeout fires, so subprocess stands in.
    def times_out(cmd, timeout=None, **kwargs):
        raise subprocess.TimeoutExpired(cmd, timeout, output=b"started\n", stderr=b"still loading\n")

    monkeypatch.setattr(report.subprocess, "run", times_out)
    with pytest.raises(report.ChildFailed, match="`child` ran past 7 s and was stopped:\nstarted\n+still loading$"):
        report.run_child(["child"], timeout=7)


# ---------------------------------------------------------------------------------------------
# train_throughput: FLOPs and MFU
# ---------------------------------------------------------------------------------------------

SMALL = train_throughput.ModelShape(vit_linear=10, vit_patch=3, vit_layers=2, vit_width=4, vit_tokens=5, mlp1=7,
                                    llm_linear=100, llm_layers=3, llm_width=8, lora=11, image_tokens_per_tile=2)


def test_training_flops_follow_the_documented_rules():
    flops = train_throughput.training_flops(SMALL, tiles=3, text_tokens=4)  # 6 image tokens, 10 in all
    assert flops["vit_forward"] == 3 * (2 * 10 * 5 + 2 * 3 * 4 + 4 * 2 * 4 * 5**2)  # forward only
    assert flops["mlp1"] == 6 * 7 * 6
    assert flops["llm_linear"] == 4 * 100 * 10  # forward + input gradients, frozen weights
    assert flops["lora"] == 6 * 11 * 10  # forward + input + weight gradients
    assert flops["llm_attention"] == 12 * 3 * 8 * 10**2
    assert flops["total"] == sum(v for k, v in flops.items() if k != "total")


def test_full_size_internvl2_2b_shape_and_the_mfu_of_the_first_measurement(tmp_path):
    """The official configuration, counted on the meta device; LoRA r=128 as XTuner wraps it."""
    from internvl_course.modelcode.official_configs import INTERNVL2_2B_CONFIG

    (tmp_path / "config.json").write_text(json.dumps(INTERNVL2_2B_CONFIG))
    shape = train_throughput.model_shape(tmp_path, 128)
    per_layer = (2048 + 4096) + (2048 + 2048) + 3 * (2048 + 8192)  # wqkv, wo, w1, w3, w2
    assert shape.lora == 128 * (24 * per_layer + 2048 + 92553)  # ... and the output head
    assert (shape.mlp1, shape.vit_tokens, shape.image_tokens_per_tile) == (4096 * 2048 + 2048 * 2048, 1025, 256)
    assert shape.llm_linear == 24 * (2048 * 4096 + 2048 * 2048 + 3 * 2048 * 8192) + 2048 * 92553
    # tutorial preset, 1792x1344 pictures: 12 tiles + thumbnail, 32 text tokens, 2.53 samples/s on an H100
    flops = train_throughput.training_flops(shape, tiles=13, text_tokens=32)
    assert flops["total"] / 1e12 == pytest.approx(41.94, abs=0.01)
    assert flops["total"] * 2.53 / 1e12 / train_throughput.peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(
        0.107, abs=0.001)


def test_set_reads_a_setting_as_a_python_literal_or_says_the_form():
    assert train_throughput.parse_setting("cache_vision_features=False") == ("cache_vision_features", False)
    assert train_throughput.parse_setting("betas=(0.9, 0.99)") == ("betas", (0.9, 0.99))
    assert train_throughput.parse_setting("dist_backend=gloo") == ("dist_backend", "gloo")
    for bad in ("cache_vision_features", "=False"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=VALUE"):
            train_throughput.parse_setting(bad)


def test_the_tiny_model_is_counted_from_its_own_config(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    shape = train_throughput.model_shape(tiny_model, 8)
    assert (shape.llm_layers, shape.llm_width) == (config["llm_config"]["num_hidden_layers"],
                                                   config["llm_config"]["hidden_size"])
    assert shape.vit_width == config["vision_config"]["hidden_size"] and shape.lora > 0


def test_lora_goes_on_every_linear_layer_but_lm_head_and_output_layer():
    names = ["model.layers.0.attention.wqkv", "model.layers.0.feed_forward.w2", "output", "lm_head", "x.output_layer"]
    assert train_throughput.lora_targets(names) == names[:3]


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5),
                                        ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("NVIDIA A10", 125.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.05),
                                        ("NVIDIA GeForce RTX 4090", 165.2), ("NVIDIA A10G", None),
                                        ("Tesla T4", None)])
def test_gpu_peaks_match_the_most_specific_name(name, peak):
    assert train_throughput.peak_tflops(name) == peak


# ---------------------------------------------------------------------------------------------
# chat_throughput: what a timeline of tokens says
# ---------------------------------------------------------------------------------------------


def test_one_request_decode_rate_leaves_the_first_token_out():
    trace = [(0.5, 1), (0.6, 2), (0.7, 3), (1.5, 11)]
    figures = chat_throughput.summarise([trace])
    assert figures["ttft_s"] == 0.5 and figures["decode_tokens_per_s"] == pytest.approx(10 / 1.0)
    assert figures["requests_per_s"] == pytest.approx(1 / 1.5) and figures["output_tokens_per_s"] == pytest.approx(
        11 / 1.5)


def test_batch_decode_rate_counts_only_while_every_request_decodes():
    # Request b starts late (its prefill came after a's) and a ends first: the window is [1.0, 2.4].
    a = [(0.2, 1), (1.0, 9), (2.0, 19), (2.4, 23)]
    b = [(1.0, 1), (1.5, 6), (2.0, 11), (3.0, 21)]
    figures = chat_throughput.summarise([a, b])
    assert figures["decode_tokens_per_s"] == pytest.approx(((23 - 9) + (11 - 1)) / 1.4)
    assert figures["ttft_s"] == pytest.approx(0.6) and figures["wall_s"] == 3.0
    assert figures["requests_per_s"] == pytest.approx(2 / 3.0)


def test_no_common_decoding_window_gives_no_decode_rate_rather_than_a_wrong_one():
    figures = chat_throughput.summarise([[(0.1, 1), (0.5, 4)], [(0.6, 1), (0.9, 4)]])
    assert figures["decode_tokens_per_s"] is None and figures["output_tokens_per_s"] == pytest.approx(8 / 0.9)
    with pytest.raises(ValueError, match="at least one generated token"):
        chat_throughput.summarise([[(0.1, 0)]])


def test_tokens_at_a_moment_and_medians_of_repeats():
    assert [chat_throughput.tokens_at([(1.0, 1), (2.0, 5)], t) for t in (0.5, 1.0, 1.9, 9)] == [0, 1, 1, 5]
    runs = [{"ttft_s": 1.0, "decode_tokens_per_s": None}, {"ttft_s": 3.0, "decode_tokens_per_s": 5.0},
            {"ttft_s": 2.0, "decode_tokens_per_s": 6.0}]
    assert chat_throughput.median_of(runs) == {"ttft_s": 2.0, "decode_tokens_per_s": None}


def test_lmdeploy_over_transformers_ratios_are_taken_batch_by_batch():
    def row(engine, batch, ttft, decode):
        return {"engine": engine, "batch": batch, "ttft_s": ttft, "decode_tokens_per_s": decode,
                "output_tokens_per_s": decode / 2, "requests_per_s": 1.0}

    rows = [row("transformers", 1, 0.4, 30.0), row("transformers", 16, 2.0, 200.0),
            row("pytorch", 1, 0.1, 90.0), row("pytorch", 16, 0.5, 1600.0)]
    assert chat_throughput.ratios(rows) == [
        {"engine": "pytorch", "batch": 1, "ttft_speedup": 4.0, "decode_ratio": 3.0, "output_ratio": 3.0,
         "requests_ratio": 1.0},
        {"engine": "pytorch", "batch": 16, "ttft_speedup": 4.0, "decode_ratio": 8.0, "output_ratio": 8.0,
         "requests_ratio": 1.0}]


# ---------------------------------------------------------------------------------------------
# wheelhouse: which wheels a bundle holds
# ---------------------------------------------------------------------------------------------


def test_pins_are_read_from_a_uv_lock_and_a_pip_freeze():
    text = ("# autogenerated\nTyping_Extensions==4.12.2\n    # via torch\nnumpy==2.1.0 ; python_version >= '3.10'\n"
            "xtuner[deepspeed]==0.2.0\n-e git+https://x\nsomething @ file:///tmp/x.whl\n")
    assert wheelhouse.read_pins(text) == {"typing-extensions": "4.12.2", "numpy": "2.1.0", "xtuner": "0.2.0"}
    locks = {env: wheelhouse.read_pins((REPO / "requirements" / f"{env}.lock").read_text()) for env in wheelhouse.ENVS}
    assert locks["course"]["lmdeploy"] == "0.18.0" and locks["train"]["xtuner"] == "0.2.0"


def test_a_node_gets_what_it_lacks_and_the_train_pins_but_keeps_its_torch_stack():
    lock = {"torch": "2.5.1", "nvidia-cublas-cu12": "12.4", "bitsandbytes": "0.45.0", "transformers": "4.48.0",
            "tokenizers": "0.21.4", "xtuner": "0.2.0", "numpy": "2.1.0", "requests": "2.32.0"}
    have = {"torch": "2.11.0", "transformers": "4.57.0", "tokenizers": "0.22.0", "numpy": "2.3.0", "requests": "2.32.0"}
    replace = wheelhouse.replacements("train", (REPO / "pyproject.toml").read_text())
    assert {"transformers", "tokenizers", "huggingface-hub", "mmengine", "deepspeed", "peft"} <= replace
    assert wheelhouse.node_subset(lock, have, replace) == {"transformers": "4.48.0", "tokenizers": "0.21.4",
                                                          "xtuner": "0.2.0"}
    course = wheelhouse.replacements("course", (REPO / "pyproject.toml").read_text())
    assert "lmdeploy" in course and "transformers" not in course


def test_manylinux_tags_cover_older_glibc_and_legacy_names():
    tags = wheelhouse.platform_tags("2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in tags and tags[-1] == "manylinux1_x86_64"
    assert "manylinux2014_x86_64" in tags and "manylinux_2_31_x86_64" not in tags
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        wheelhouse.platform_tags("3.1")


def test_download_commands_take_wheels_for_the_target_and_sdists_apart(tmp_path):
    commands = wheelhouse.download_commands({"addict": "2.4.0", "deepspeed": "0.16.2"}, tmp_path, "3.12", "2.28",
                                            python="py")
    wheels, sdists = commands
    assert wheels[:3] == ["py", "-m", "pip"] and "--only-binary=:all:" in wheels and wheels[-1] == "addict==2.4.0"
    assert wheels[wheels.index("--python-version") + 1] == "3.12" and "--no-deps" in wheels
    assert "--no-binary=:all:" in sdists and sdists[-1] == "deepspeed==0.16.2" and str(tmp_path / "sdist") in sdists


def test_stripping_a_wheel_removes_the_files_and_their_record_lines(tmp_path):
    wheel = tmp_path / "lmdeploy-0.18.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    record = ("lmdeploy/__init__.py,sha256=a,1\n"
              "lmdeploy/turbomind/_turbomind.cpython-312-x86_64-linux-gnu.so,sha256=b,9\n"
              "lmdeploy/turbomind/lib/libturbomind_nccl_stub.so,sha256=c,3\n"
              "lmdeploy-0.18.0.dist-info/RECORD,,\n")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("lmdeploy/__init__.py", "x")
        z.writestr("lmdeploy/turbomind/_turbomind.cpython-312-x86_64-linux-gnu.so", b"0" * 9)
        z.writestr("lmdeploy/turbomind/lib/libturbomind_nccl_stub.so", b"abc")
        z.writestr("lmdeploy-0.18.0.dist-info/RECORD", record)
    assert wheelhouse.strip_wheel(wheel, wheelhouse.TURBOMIND_LIBRARY) == 9
    with zipfile.ZipFile(wheel) as z:
        assert z.namelist() == ["lmdeploy/__init__.py", "lmdeploy/turbomind/lib/libturbomind_nccl_stub.so",
                                "lmdeploy-0.18.0.dist-info/RECORD"]
        assert "_turbomind.cpython" not in z.read("lmdeploy-0.18.0.dist-info/RECORD").decode()
    assert wheelhouse.strip_wheel(wheel, wheelhouse.TURBOMIND_LIBRARY) == 0  # already stripped: untouched


def test_a_node_bundle_dry_run_lists_packages_and_downloads_nothing(tmp_path, capsys):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("torch==2.11.0\ntransformers==4.57.0\nnumpy==2.3.0\n")
    assert wheelhouse.main(["node", "--out", str(tmp_path / "node"), "--have", str(freeze), "--dry-run"]) == 0
    out = capsys.readouterr().out
    tokens = out.split()
    assert "lmdeploy==0.18.0" in tokens and "transformers==4.48.0" in tokens
    assert not any(t.startswith(("torch==", "nvidia-", "bitsandbytes==")) for t in tokens)
    assert not (tmp_path / "node").exists()
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(SystemExit, match="lists no packages"):
        wheelhouse.main(["node", "--out", str(tmp_path / "n"), "--have", str(tmp_path / "empty.txt"), "--dry-run"])


def test_a_node_bundle_above_max_mib_stops_and_names_its_largest_files(tmp_path, capsys):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("torch==2.11.0\n")
    out = tmp_path / "node"
    (out / "course").mkdir(parents=True)
    (out / "train").mkdir()
    (out / "course" / "big-1.0-py3-none-any.whl").write_bytes(b"0" * (3 * 2**19))  # 1.5 MiB
    (out / "train" / "small-1.0.tar.gz").write_bytes(b"0" * 2**19)  # 0.5 MiB
    args = ["node", "--out", str(out), "--have", str(freeze), "--only", "nothing-to-fetch"]  # downloads nothing
    assert wheelhouse.main(args) == 0  # no limit by default: the size is only printed
    assert f"{out}: 2.0 MiB" in capsys.readouterr().out
    assert wheelhouse.main([*args, "--max-mib", "2"]) == 0  # exactly the limit is allowed
    with pytest.raises(SystemExit, match=r"2\.0 MiB, more than --max-mib 1\.5; largest: "
                                         r"course/big-1\.0-py3-none-any\.whl \(1\.5 MiB\), train/small"):
        wheelhouse.main([*args, "--max-mib", "1.5"])
    with pytest.raises(SystemExit) as refused:
        wheelhouse.main([*args, "--max-mib", "0"])
    assert refused.value.code == 2 and "--max-mib must be a positive number" in capsys.readouterr().err


def test_preprocess_timing_counts_the_tiles():
    import preprocess_throughput

    data = preprocess_throughput.jpeg_picture(800, 600)
    tiles, seconds = preprocess_throughput.time_load(data, max_num=12, min_seconds=0, min_repeats=1)
    assert tiles == 13 and seconds > 0


# ---------------------------------------------------------------------------------------------
# The scripts themselves, end to end on the CPU (smoke checks: the GPU figures come from a GPU)
# ---------------------------------------------------------------------------------------------


def _script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / name), *args]


@pytest.mark.slow
def test_chat_throughput_runs_transformers_and_says_why_lmdeploy_does_not(tiny_model, tmp_path):
    out = tmp_path / "chat.json"
    proc = subprocess.run(_script("chat_throughput.py", "--model", str(tiny_model), "--batches", "1", "2",
                                  "--max-new-tokens", "4", "--repeats", "1", "--size", "448x448",
                                  "--engines", "transformers", "pytorch", "--json", str(out)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(r["engine"], r["batch"], r["tokens_per_request"]) for r in result["rows"]][:2] == [
        ("transformers", 1, 4), ("transformers", 2, 4)]
    assert result["environment"]["command"].startswith("python ")
    if not torch.cuda.is_available():
        assert "needs a CUDA GPU" in result["engines"]["pytorch"]["why"] and "pytorch: skipped" in proc.stdout
        assert result["ratios"] == []


@pytest.mark.slow
def test_train_throughput_smoke_check_on_the_cpu(tiny_model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the CPU smoke check; on a GPU the script trains the full presets")
    out = tmp_path / "train.json"
    proc = subprocess.run(_script("train_throughput.py", "--model", str(tiny_model), "--iters", "3", "--samples", "4",
                                  "--work", str(tmp_path / "work"), "--json", str(out)),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(out.read_text())["presets"][0]
    assert row["preset"] == "cpu-tiny" and row["tiles"] == 1 and row["mfu"] is None and row["peak_memory_gb"] is None
    assert row["samples_per_s"] > 0 and row["flops_per_sample"]["total"] > 0
    assert "| cpu-tiny" in proc.stdout and "n/a" in proc.stdout


@pytest.mark.slow
def test_preprocess_throughput_writes_its_table_and_json(tmp_path):
    out = tmp_path / "pre.json"
    proc = subprocess.run(_script("preprocess_throughput.py", "--sizes", "800x600", "--max-num", "1", "12",
                                  "--min-seconds", "0.05", "--json", str(out)), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [(r["max_num"], r["tiles"]) for r in json.loads(out.read_text())["rows"]] == [(1, 1), (12, 13)]
    assert "| 800x600" in proc.stdout
