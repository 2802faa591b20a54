"""The plugin shell: options, markers, lazy imports, collection errors."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "llmcompressor", "lm_eval")


def test_importing_the_plugin_imports_nothing_heavy():
    code = (
        "import sys, pytest_quant, pytest_quant.plugin, pytest_quant.session, pytest_quant.backends;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_quant_group_without_importing_torch(pytester: pytest.Pytester):
    pytester.makeconftest(
        "import sys\n"
        "def pytest_unconfigure(config):\n"
        f"    print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*LLM quantization regression testing*", "*--quant-update-baselines*",
                                 "*--quant-mode=MODE*", "*--quant-report=PATH.json*", "*quant_suite_pattern*"])
    result.stdout.fnmatch_lines(["HEAVY []"])


def test_markers_are_registered(pytester: pytest.Pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.gpu(devices=1, hardware=None)*", "@pytest.mark.quant*", "@pytest.mark.slow*"])


def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester):
    result = pytester.runpytest("--quant-mode=strict")
    result.stderr.fnmatch_lines(["*--quant-mode: expected one of point, alarm, gate, got 'strict'*"])
    result = pytester.runpytest("--quant-confidence=1.5")
    result.stderr.fnmatch_lines(["*--quant-confidence: must lie strictly between 0.5 and 1*"])
    pytester.makeini("[pytest]\nquant_import_errors = ignore\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*ini quant_import_errors: expected 'fail' or 'skip', got 'ignore'*"])
    pytester.makeini("[pytest]\nquant_import_tp_size = 0\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*ini quant_import_tp_size: expected a whole number >= 1, got '0'*"])


def test_gpu_marker_skips_with_reason_and_checks_kwargs(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.gpu(devices=64)
        def test_big():
            pass
        """
    )
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs 64 CUDA device(s); 0 visible on this machine*"])
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.gpu(memory="80G")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*marker @gpu takes devices, hardware; got memory*"])
    # hardware-tied items (vLLM's ROCm / Hopper lists) skip on other hardware, with the reason
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.gpu(devices=0, hardware="rocm,hopper")
        def test_tied():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")  # torch is imported once per process
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*its recorded values belong to AMD (ROCm) or NVIDIA Hopper (sm90) GPUs; this machine has none of those*"]
    )


def test_malformed_suite_is_a_collection_error_naming_file_and_field(pytester: pytest.Pytester):
    pytester.makefile(".quant.yaml", bad="model: m\nschemes:\n  a: {method: gptq, weights: {bits: 4, group_size: 0}}\n"
                                          "tasks: {t: {}}\nbudgets: [{max_drop: 1%}]\n")
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*bad.quant.yaml:3: schemes.a.weights.group_size: *greater than or equal to 1 (got 0)*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_suite_pattern_is_an_ini_option(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nquant_suite_pattern = *.qsuite.yml\n")
    pytester.makefile(".qsuite.yml", s="model: m\nschemes: {a: {method: rtn}}\ntasks: {t: {limit: 10}}\nbudgets: [{max_drop: 50%}]\n")
    pytester.makefile(".quant.yaml", ignored="not: [valid")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["s.qsuite.yml::drop<=50%[a-t]"])


@pytest.mark.parametrize("visible,expect", [(None, {"gw0": "0,1", "gw1": "2,3"}), ("4,5,6,7", {"gw0": "4,5", "gw1": "6,7"})])
def test_each_xdist_worker_gets_its_own_gpu_group(pytester: pytest.Pytester, monkeypatch, visible, expect):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):  # when this test itself runs under xdist
        monkeypatch.delenv(var, raising=False)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    pytester.makeini("[pytest]\nquant_gpus_per_worker = 2\n")
    pytester.makepyfile(
        """
        import os, pathlib, pytest
        @pytest.mark.parametrize("i", range(6))
        def test_env(i):
            w = os.environ["PYTEST_XDIST_WORKER"]
            pathlib.Path(f"seen-{w}-{i}").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    seen = {p.name.split("-")[1]: p.read_text() for p in pytester.path.glob("seen-*")}
    assert seen == expect


def test_gpu_groups_beyond_visible_devices_are_a_usage_error(pytester: pytest.Pytester, monkeypatch):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    pytester.makeini("[pytest]\nquant_gpus_per_worker = 2\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*quant_gpus_per_worker=2 with -n 2 needs 4 GPUs but CUDA_VISIBLE_DEVICES lists 2*"])
