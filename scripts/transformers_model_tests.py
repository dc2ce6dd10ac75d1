"""Run transformers' own model test mixins on Akshara and on transformers' native NanoChat, side by side.

transformers' test suite is not installed with the package (and this project ships none of its code): pass a tree
that holds it, `--transformers-tests PATH`, where `PATH/tests/test_modeling_common.py` and
`PATH/tests/causal_lm_tester.py` exist (a transformers checkout of the installed version; docs/transformers-tests.md
says how to assemble one). Akshara's tester below is written like native NanoChat's
(`tests/models/nanochat/test_modeling_nanochat.py`): `CausalLMModelTester` with the default tiny config (hidden 32,
2 layers, 2 heads, vocabulary 99) and `CausalLMModelTest`, i.e. `ModelTesterMixin` + `GenerationTesterMixin` +
`PipelineTesterMixin`; a second case runs nanochat 2026's architecture. Native NanoChat's own test case from the tree
runs in the same pytest session. The tree's `TrainingTesterMixin` and `TensorParallelTesterMixin` ("add to model test
classes alongside ModelTesterMixin") are added to every case, native included, when `CausalLMModelTest` lacks them;
`--all-tp` lifts their allowlist of model types for the multi-process tensor-parallel tests (CPU, gloo).

Prints passed / failed / skipped per model, the Akshara failures, and the tests skipped on Akshara that run on native
NanoChat (the target: none). Exit status 0 only when Akshara has no failure and that set is empty.

Usage: python scripts/transformers_model_tests.py --transformers-tests PATH [-k EXPR] [--all-tp] [--verbose]
"""

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NATIVE_TEST_FILE = Path("tests/models/nanochat/test_modeling_nanochat.py")
NATIVE_CLASS = "NanoChatModelTest"
# The Akshara test cases: the late-2025 architecture (the default) and nanochat 2026 (every switch on).
AKSHARA_CLASSES = {"AksharaModelTest": "Akshara", "Akshara2026ModelTest": "Akshara 2026"}
# Tests overridden to skip because they do not apply to the architecture (listed apart, not counted as a gap).
_NO_IDS = "value embeddings (nanochat 2026) are looked up from input_ids: inputs_embeds alone cannot drive the model"
_UNTIED = "the tied-embeddings variant: Akshara's embedding and head are separate matrices (tying is refused)"
NOT_APPLICABLE = {
    "AksharaModelTest": {"test_tp_forward_1": _UNTIED},
    "Akshara2026ModelTest": {"test_tp_forward_1": _UNTIED, "test_inputs_embeds": _NO_IDS,
                             "test_inputs_embeds_matches_input_ids": _NO_IDS},
}  # fmt: skip

# The generated pytest module: the transformers tree first on sys.path (its `tests` package, not ours), then the
# Akshara test cases built by `akshara_test_cases` below.
STUB = """\
import sys
sys.path[:0] = [{tree!r}, {scripts!r}, {root!r}]
if "tests" in sys.modules and {tree!r} + "/tests" not in list(getattr(sys.modules["tests"], "__path__", [])):
    for name in [name for name in sys.modules if name == "tests" or name.startswith("tests.")]:
        del sys.modules[name]  # our own tests package, imported before: not the tree's
from transformers_model_tests import build_test_cases
globals().update(build_test_cases(all_tp={all_tp!r}))
"""

# Mixins of the tree added to every case when its `CausalLMModelTest` lacks them: (module, class).
EXTRA_MIXINS = (("tests.test_training_mixin", "TrainingTesterMixin"),
                ("tests.test_tensor_parallel_mixin", "TensorParallelTesterMixin"))  # fmt: skip


def extra_mixins(all_tp: bool = False) -> tuple:
    """The tree's extra mixins that its `CausalLMModelTest` does not already include."""
    import importlib

    from tests.causal_lm_tester import CausalLMModelTest

    mixins = []
    for module_name, class_name in EXTRA_MIXINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if all_tp and hasattr(module, "TP_DISTRIBUTED_TEST_MODEL_TYPES"):
            module.TP_DISTRIBUTED_TEST_MODEL_TYPES = None  # the module's own switch: "None to run all tests"
        mixin = getattr(module, class_name)
        if not issubclass(CausalLMModelTest, mixin):
            mixins.append(mixin)
    return tuple(mixins)


def build_test_cases(all_tp: bool = False) -> dict:
    """Every case of the run: Akshara's two and native NanoChat's (from the tree, when it has the file), each with
    the same extra mixins."""
    import importlib
    import unittest

    mixins = extra_mixins(all_tp)
    cases = {name: type(name, (case, *mixins), {}) if mixins else case
             for name, case in akshara_test_cases().items()}  # fmt: skip
    try:
        native = importlib.import_module(".".join(NATIVE_TEST_FILE.with_suffix("").parts)).NanoChatModelTest
    except ImportError:
        return cases
    cases[NATIVE_CLASS] = type(NATIVE_CLASS, (native, *mixins), {}) if mixins else native
    assert all(issubclass(case, unittest.TestCase) for case in cases.values())
    return cases



def register_akshara_names():
    """Put Akshara in the name tables transformers' own models are listed in.

    `ModelTesterMixin` decides what a class is by looking its name up in `MODEL_MAPPING_NAMES` (base models: the
    RoPE scaling tests), `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` (causal LMs: labels in `_prepare_for_class`, training
    tests), ... — tables of the library's own models. A remote-code model is registered with the Auto classes
    instead (`AutoModel.register`, which `akshara_hf.model` does); adding the same two entries here is what merging
    the model into transformers would do, so the tests treat Akshara as they treat NanoChat.
    """
    from transformers.models.auto import modeling_auto

    modeling_auto.MODEL_MAPPING_NAMES.setdefault("akshara", "AksharaModel")
    modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("akshara", "AksharaForCausalLM")


def akshara_test_cases() -> dict:
    """Akshara's test cases, written like native NanoChat's (they import the transformers tree's `tests` package):
    `AksharaModelTest` (late 2025, the default config) and `Akshara2026ModelTest` (nanochat 2026's switches)."""
    import unittest

    from tests.causal_lm_tester import CausalLMModelTest, CausalLMModelTester
    from transformers.testing_utils import require_torch

    from akshara_hf.model.configuration_akshara import AksharaConfig
    from akshara_hf.model.modeling_akshara import AksharaForCausalLM, AksharaModel

    register_akshara_names()

    class AksharaModelTester(CausalLMModelTester):
        config_class = AksharaConfig
        base_model_class = AksharaModel
        causal_lm_class = AksharaForCausalLM

        def __init__(self, parent, **kwargs):
            super().__init__(parent, **kwargs)
            # Config fields the tester passes on by name (like NanoChat's). `initializer_range` (the tester's
            # 0.02) is set already: nanochat's own init starts every output projection and the head at zero, under
            # which an untrained model's output depends on neither attention nor the targets, so the RoPE and loss
            # tests would compare constants. fp32 rotary tables (nanochat 2026's on CPU) instead of late-2025's
            # bf16: test_model_rope_scaling_frequencies compares positions reached two ways at fp32 tolerance
            # (1e-5), finer than bf16's 2^-9 steps; tests/test_modeling.py checks the bf16 tables against
            # transformers' own to that rounding.
            self.rotary_dtype = "float32"

    class Akshara2026ModelTester(AksharaModelTester):
        def __init__(self, parent, **kwargs):
            super().__init__(parent, **kwargs)
            # nanochat 2026: value embeddings, residual/x0 lambdas, smear, backout, q/k scale, and a sliding layer
            # whose window (4 keys) is shorter than the tester's 7-token inputs, so it masks something.
            self.layer_types = ["sliding_attention", "full_attention"]
            self.sliding_window = 4
            self.use_value_embeddings = self.use_residual_lambdas = self.use_smear = self.use_backout = True
            self.qk_scale = 1.2

    @require_torch
    class AksharaModelTest(CausalLMModelTest, unittest.TestCase):
        model_tester_class = AksharaModelTester

    @require_torch
    class Akshara2026ModelTest(CausalLMModelTest, unittest.TestCase):
        model_tester_class = Akshara2026ModelTester

    cases = {"AksharaModelTest": AksharaModelTest, "Akshara2026ModelTest": Akshara2026ModelTest}
    for name, case in cases.items():  # the tests that do not apply skip, with the reason (see NOT_APPLICABLE)
        for test, reason in NOT_APPLICABLE.get(name, {}).items():
            setattr(case, test, _skipping(reason))
    return cases


def _skipping(reason: str):
    def test(self):
        self.skipTest(reason)

    return test


class Collector:
    """pytest plugin: the outcome (and skip reason) of every test, by class and test name; a test with a failed
    subtest counts as failed (pytest reports the test itself as passed then)."""

    def __init__(self):
        self.outcomes = {}  # (class, test) -> (outcome, reason)
        self.subtest_failures = set()

    @property
    def results(self) -> dict:
        return {key: ("failed", "a subtest failed") if key in self.subtest_failures and outcome == "passed"
                else (outcome, reason) for key, (outcome, reason) in self.outcomes.items()}  # fmt: skip

    def pytest_runtest_logreport(self, report):
        parts = report.nodeid.split("::")
        if len(parts) < 3:
            return
        key = (parts[-2], parts[-1])
        if type(report).__name__ != "TestReport":  # a subtest's report
            if report.failed:
                self.subtest_failures.add(key)
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
            outcome = "failed" if report.failed else report.outcome
            self.outcomes[key] = (outcome, str(reason).removeprefix("Skipped: "))
        elif report.when == "teardown" and report.failed:
            self.outcomes[key] = ("failed", "teardown")


def check_tree(tree: Path) -> Path:
    tree = tree.resolve()
    if (tree / "test_modeling_common.py").is_file():  # given the tests folder itself
        tree = tree.parent
    for needed in ("tests/test_modeling_common.py", "tests/causal_lm_tester.py"):
        if not (tree / needed).is_file():
            raise SystemExit(f"transformers_model_tests.py: error: {tree}: no {needed} (not a transformers tests tree)")
    return tree


def run(tree: Path, keyword: str | None, verbose: bool, all_tp: bool = False) -> dict:
    import pytest

    collector = Collector()
    with tempfile.TemporaryDirectory(prefix="akshara-mixin-") as tmp:
        stub = Path(tmp) / "test_akshara_mixins.py"
        stub.write_text(STUB.format(tree=str(tree), scripts=str(ROOT / "scripts"), root=str(ROOT), all_tp=all_tp))
        args = [str(stub), "-p", "no:cacheprovider", "-W", "ignore", "--rootdir", tmp, "-q" if not verbose else "-v"]
        if keyword:
            args += ["-k", keyword]
        os.chdir(tree)  # transformers' tests read some files relative to the working directory
        pytest.main(args, plugins=[collector])
    return collector.results


def defining_mixin(test_case, name: str) -> str:
    """The first class in the test case's MRO, from the base, that defines the test: the mixin it comes from."""
    for klass in reversed(test_case.__mro__):
        if name in vars(klass):
            return klass.__name__
    return "?"


def report(results: dict) -> int:
    by_class = {}
    for (cls, test), value in results.items():
        by_class.setdefault(cls, {})[test] = value
    native = by_class.get(NATIVE_CLASS, {})
    try:
        test_case = akshara_test_cases()["AksharaModelTest"]
    except Exception:  # noqa: BLE001 - only used to label rows
        test_case = None
    print()
    for label, tests in [*((label, by_class.get(cls, {})) for cls, label in AKSHARA_CLASSES.items()),
                         ("native NanoChat", native)]:  # fmt: skip
        counts = Counter(outcome for outcome, _ in tests.values())
        if tests:
            print(f"{label:16s} passed {counts['passed']:4d}  failed {counts['failed']:4d}  skipped {counts['skipped']:4d}")
        else:
            print(f"{label:16s} not run")
    ok = True
    for cls, label in AKSHARA_CLASSES.items():
        tests = by_class.get(cls, {})
        failed = sorted(test for test, (outcome, _) in tests.items() if outcome == "failed")
        not_applicable = NOT_APPLICABLE.get(cls, {})
        gap = sorted(test for test, (outcome, _) in tests.items() if outcome == "skipped"
                     and native.get(test, ("skipped",))[0] != "skipped" and test not in not_applicable)  # fmt: skip
        print(f"\n{label} failures ({len(failed)}):")
        for test in failed:
            print(f"  {test}")
        print(f"{label}: skipped, but run on native NanoChat ({len(gap)}; target: 0):")
        for test in gap:
            mixin = defining_mixin(test_case, test.split("[")[0]) if test_case else "?"
            print(f"  {test} [{mixin}; native {native[test][0]}]: {tests[test][1]}")
        for test, reason in not_applicable.items():
            if test in tests:
                print(f"  (not applicable, skipped: {test}: {reason})")
        ok = ok and bool(tests) and not failed and not gap
    only_native = sorted(set(native) - set().union(*(by_class.get(cls, {}) for cls in AKSHARA_CLASSES)))
    if only_native:
        print(f"\nRun on native NanoChat only ({len(only_native)}): {', '.join(only_native)}")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformers-tests", required=True, type=Path,
                        help="a tree holding transformers' tests/ (tests/test_modeling_common.py, tests/causal_lm_tester.py)")  # fmt: skip
    parser.add_argument("-k", dest="keyword", help="pytest -k expression, to run a subset")
    parser.add_argument("--all-tp", action="store_true",
                        help="run the multi-process tensor-parallel tests for every model type (their allowlist off)")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="pytest -v")
    args = parser.parse_args(argv)
    tree = check_tree(args.transformers_tests)
    return report(run(tree, args.keyword, args.verbose, args.all_tp))


if __name__ == "__main__":
    sys.exit(main())
