"""``pytest --quant-doctor PATH`` and the doctor's items beside a suite's ``checkpoint:`` schemes.

Checkpoints are GPTQ / AWQ folders packed with NumPy and written with ``safetensors.numpy`` (the
packers of ``test_doctor.py``): the in-process runs never import torch. Suite runs collect the
budget items too, so they run in a subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_doctor import awq_checkpoint, float_weights, gptq_checkpoint, llama_config, write_checkpoint

CHECKS = ("zero_points", "scales", "group_size", "shapes", "layers")
Q_PROJ = "model.layers.0.self_attn.q_proj"


def save_numpy(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-rA", *args)


@pytest.fixture
def clean(pytester: pytest.Pytester) -> Path:
    return gptq_checkpoint(pytester.path / "clean", save=save_numpy)


@pytest.fixture
def wrapped(pytester: pytest.Pytester) -> Path:
    """GPTQ v1 with wrapped zero points in one layer and zeroed scales in another."""
    folder = gptq_checkpoint(pytester.path / "wrapped", positive={Q_PROJ: 2}, save=save_numpy)
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.scales"][1, :5] = 0
    save_numpy(tensors, folder / "model.safetensors")
    return folder


def test_clean_checkpoint_is_one_passing_item_per_check(pytester: pytest.Pytester, clean: Path) -> None:
    pytester.makepyfile(test_other="def test_not_collected():\n    assert False\n")  # --quant-doctor: only the doctor
    result = run(pytester, "--quant-doctor", "clean", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([f"clean::doctor[[]clean:{check}] PASSED*" for check in CHECKS], consecutive=False)
    assert result.ret == pytest.ExitCode.OK


def test_test_paths_beside_the_doctor_are_a_usage_error(pytester: pytest.Pytester, clean: Path) -> None:
    """The doctor collects nothing else: named test paths would silently not run (a gate green on the doctor)."""
    pytester.makepyfile(test_other="def test_failing():\n    assert False\n")
    result = run(pytester, "--quant-doctor", "clean", "test_other.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quant-doctor checks checkpoint folders and collects nothing else*test_other.py*"])


def test_a_defect_fails_its_own_item_naming_every_tensor(pytester: pytest.Pytester, wrapped: Path) -> None:
    result = run(pytester, f"--quant-doctor={wrapped}")
    result.assert_outcomes(passed=3, failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*checkpoint doctor: 1 finding of check 'zero_points' in *wrapped (gptq v1 4-bit g32 asym)",
            f"  [[]zero_point_overflow] {Q_PROJ}.qzeros: 4 of 128 stored zero points are 15 (2^4-1)*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*checkpoint doctor: 1 finding of check 'scales'*",
            "  [[]scale_zero] model.layers.1.mlp.up_proj.scales: 5 of 256 scales are zero*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["FAILED *wrapped::doctor[[]wrapped:zero_points]*", "FAILED *wrapped::doctor[[]wrapped:scales]*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_every_path_gets_its_items_and_k_selects(pytester: pytest.Pytester, clean: Path, wrapped: Path) -> None:
    awq_checkpoint(pytester.path / "awq", save=save_numpy)
    result = run(pytester, "--quant-doctor", "clean", "--quant-doctor", "wrapped/", "--quant-doctor", "awq")
    result.assert_outcomes(passed=13, failed=2)
    result = run(pytester, "--quant-doctor", "clean", "--quant-doctor", "wrapped", "-k", "zero_points", "-m", "quant")
    result.assert_outcomes(passed=1, failed=1, deselected=8)


def test_group_size_and_layer_findings_list_every_layer(pytester: pytest.Pytester) -> None:
    gptq_checkpoint(pytester.path / "g48", group_size=48, save=save_numpy)
    result = run(pytester, "--quant-doctor", "g48")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*14 findings of check 'group_size'*"])
    result.stdout.fnmatch_lines(
        ["  [[]group_size_indivisible] model.layers.1.mlp.down_proj: group_size 48 does not divide in_features 128*"]
    )


def test_unquantized_checkpoint_skips_with_nothing_to_check(pytester: pytest.Pytester) -> None:
    tensors = {k: v.astype(np.float16) for k, v in float_weights().items()}
    write_checkpoint(pytester.path / "dense", llama_config(None), tensors, save_numpy)
    result = run(pytester, "--quant-doctor", "dense")
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(["SKIPPED [[]5] *dense: config.json has no quantization_config*nothing to check"])
    assert result.ret == pytest.ExitCode.OK


def test_bad_folder_fails_naming_file_and_field(pytester: pytest.Pytester, clean: Path) -> None:
    (pytester.path / "empty").mkdir()
    config = json.loads((clean / "config.json").read_text())
    config["quantization_config"]["quant_method"] = "hqq"
    (clean / "config.json").write_text(json.dumps(config))
    result = run(pytester, "--quant-doctor", "empty", "--quant-doctor", "clean")
    result.assert_outcomes(failed=10)
    result.stdout.fnmatch_lines([f"*checkpoint doctor: {pytester.path / 'empty'}: config.json: no config.json*"])
    result.stdout.fnmatch_lines(
        [f"*checkpoint doctor: {clean / 'config.json'}: quantization_config.quant_method: unknown quant_method 'hqq'*"]
    )
    assert "Traceback" not in result.stdout.str()


SUITE = """\
model: tiny-llama-test
schemes:
  w4-gptq: {checkpoint: ./wrapped}
  w4-awq: {checkpoint: ./awq}
  dense: {checkpoint: ./dense}
tasks:
  corpus: {perplexity: corpus.txt, seq_len: 64}
budgets:
  - {name: loss, max_drop: 5%, mode: point}
"""


def test_suite_checkpoint_schemes_get_doctor_items(pytester: pytest.Pytester, wrapped: Path) -> None:
    awq_checkpoint(pytester.path / "awq", save=save_numpy)
    tensors = {k: v.astype(np.float16) for k, v in float_weights().items()}
    write_checkpoint(pytester.path / "dense", llama_config(None), tensors, save_numpy)  # unquantized: no doctor items
    (pytester.path / "corpus.txt").write_text("hello world\n" * 20)
    pytester.makefile(".quant.yaml", release=SUITE)
    collected = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only", "-q", "-m", "quant")
    lines = [line for line in collected.stdout.lines if line.startswith("release.quant.yaml::")]
    assert lines == [
        "release.quant.yaml::loss[w4-gptq-corpus]",
        "release.quant.yaml::loss[w4-awq-corpus]",
        "release.quant.yaml::loss[dense-corpus]",
        *(f"release.quant.yaml::doctor[w4-gptq:{check}]" for check in CHECKS),
        *(f"release.quant.yaml::doctor[w4-awq:{check}]" for check in CHECKS),
    ]
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "-k", "doctor")
    result.assert_outcomes(passed=8, failed=2, deselected=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED release.quant.yaml::doctor[[]w4-gptq:zero_points] - Failed: checkpoint d*",
            "FAILED release.quant.yaml::doctor[[]w4-gptq:scales] - Failed: checkpoint doctor*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines([f"*[[]zero_point_overflow] {Q_PROJ}.qzeros: 4 of 128*"])


def test_under_xdist(pytester: pytest.Pytester, clean: Path, wrapped: Path) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", "--quant-doctor", "clean", "--quant-doctor", "wrapped"
    )
    result.assert_outcomes(passed=8, failed=2)
