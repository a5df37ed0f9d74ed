"""CI smoke-training (docs/ci.md): the committed golden runs pass, deliberately wrong changes fail
naming the first diverging step and metric, --expect fails with the expression and value, and the
JSON report and JUnit XML are what CI systems read (JUnit parsed by junitparser)."""
import json
import os
import re
import pathlib
import subprocess
import xml.etree.ElementTree as ET

import pytest
from junitparser import Error, Failure, JUnitXml

from conftest import REPO

# A short tiny-preset run: the mutation tests record their own golden file from it.
SHORT = ["--config", "tiny", "--set", "train.steps=20", "--set", "schedule.warmup=2"]


def validate_junit(path: pathlib.Path) -> None:
    """Against tests/python/junit.xsd (the dialect Jenkins, GitLab and GitHub report actions read),
    plus what a schema cannot say: the counts match the test cases."""
    import xmlschema
    xmlschema.XMLSchema(str(REPO / "tests" / "python" / "junit.xsd")).validate(str(path))
    root = ET.parse(path).getroot()
    for element in [root, *root.findall("testsuite")]:
        cases = element.findall(".//testcase")
        assert int(element.get("tests")) == len(cases)
        assert int(element.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(element.get("errors")) == sum(1 for c in cases if c.find("error") is not None)


def binary() -> pathlib.Path:
    return pathlib.Path(os.environ.get("LATENTMOE_BUILD_DIR", REPO / "build")) / "latentmoe"


def train(tmp: pathlib.Path, *args: str, env: dict | None = None, name: str = "run") -> subprocess.CompletedProcess:
    out = tmp / name
    cmd = [str(binary()), "train", *args, "--set", f"checkpoint.dir={out / 'ckpt'}", "--set", f"logging.dir={out / 'log'}"]
    # Two threads unless a test says otherwise, so "same environment" holds on any machine with 2+ cores.
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})


@pytest.fixture(scope="module")
def short_golden(tmp_path_factory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("golden")
    path = tmp / "short.json"
    result = train(tmp, *SHORT, "--golden", str(path), "--golden-write")
    assert result.returncode == 0, result.stderr
    return path


@pytest.mark.parametrize("name", ["tiny", "debug-fp32", "debug-bf16"])
def test_committed_golden_runs_pass(tmp_path, name):
    """The references in tests/golden/, checked as a CI user would (tools/golden_runs.sh check)."""
    env = {**os.environ, "GOLDEN_OUT": str(tmp_path)}
    if name == "tiny":  # the preset's promise: below the unigram entropy (its speed is measured in docs/ci.md)
        env["GOLDEN_ARGS"] = "--expect valid_loss<unigram_entropy --expect steps==200"
    result = subprocess.run(["bash", str(REPO / "tools" / "golden_runs.sh"), "check", name], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "golden check passed" in result.stderr
    report = json.loads((tmp_path / f"{name}.report.json").read_text())
    assert report["status"] == "passed" and report["exit_code"] == 0
    assert report["golden"]["passed"] and report["golden"]["checks"]
    assert all(c["passed"] for c in report["golden"]["checks"])
    validate_junit(tmp_path / f"{name}.junit.xml")
    xml = JUnitXml.fromfile(str(tmp_path / f"{name}.junit.xml"))
    cases = [case for suite in xml for case in suite]
    assert len(cases) == 1 + len(report["expectations"]) + len(report["golden"]["checks"])
    assert all(case.is_passed for case in cases)
    if name == "tiny":
        assert report["metrics"]["valid_loss"] < report["metrics"]["unigram_entropy"]


@pytest.mark.parametrize("mode", ["auto", "tolerance"])
def test_flipped_balancing_sign_fails_naming_the_first_diverging_step(tmp_path, short_golden, mode):
    result = train(tmp_path, *SHORT, "--golden", str(short_golden), "--golden-mode", mode,
                   env={"LATENTMOE_TEST_FLIP_BALANCE_SIGN": "1"})
    assert result.returncode == 5, result.stderr[-3000:]
    line = next(l for l in result.stderr.splitlines() if l.startswith("latentmoe: check failed:"))
    assert "golden check failed: first divergence at step " in line
    step = int(line.split("first divergence at step ")[1].split()[0])
    assert 2 <= step <= 20  # step 1 runs before the first (flipped) bias update
    assert "expert_load/layer" in line  # the balancer's own metric diverges


def test_changed_rope_base_fails_within_tolerance_and_names_the_config_difference(tmp_path, short_golden):
    result = train(tmp_path, *SHORT, "--set", "model.rope_theta=50000", "--golden", str(short_golden),
                   "--golden-mode", "tolerance")
    assert result.returncode == 5, result.stderr[-3000:]
    assert "golden check failed: first divergence at step " in result.stderr
    assert "model.rope_theta: 10000.0 → 50000.0" in result.stderr


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores: torch runs at most one thread per core")
def test_same_run_is_bit_identical_and_fewer_threads_pass_within_tolerance(tmp_path, short_golden):
    same = train(tmp_path, *SHORT, "--golden", str(short_golden), name="same")
    assert same.returncode == 0, same.stderr[-3000:]
    assert "golden check passed" in same.stderr and "exact: same environment" in same.stderr
    one_thread = train(tmp_path, *SHORT, "--golden", str(short_golden), env={"OMP_NUM_THREADS": "1"}, name="one")
    assert one_thread.returncode == 0, one_thread.stderr[-3000:]
    assert re.search(r"within tolerance: environment differs: threads \d+ → 1", one_thread.stderr), one_thread.stderr[-2000:]


def test_failing_expectation_report_and_junit(tmp_path, short_golden):
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result = train(tmp_path, *SHORT, "--expect", "valid_loss<1.5", "--expect", "tokens_per_s>10", "--expect",
                   "steps==20", "--golden", str(short_golden), "--report", str(report), "--junit", str(junit))
    assert result.returncode == 5, result.stderr[-3000:]
    failed = [l for l in result.stderr.splitlines() if l.startswith("latentmoe: check failed:")]
    assert len(failed) == 1 and "valid_loss<1.5 failed: valid_loss = " in failed[0]
    doc = json.loads(report.read_text())
    assert doc["status"] == "failed" and doc["exit_code"] == 5
    assert len(doc["config"]["sha256"]) == 64 and doc["config"]["name"] == "tiny"
    assert doc["versions"]["torch"].startswith("2.11") and doc["versions"]["latentmoe"]
    assert doc["steps"] == {"first": 1, "final": 20, "target": 20}
    for key in ["loss", "lm_loss", "mtp_loss", "grad_norm", "valid_loss", "unigram_entropy", "tokens_per_s", "peak_rss_mb"]:
        assert doc["metrics"][key] > 0, key
    assert [pathlib.Path(c).name for c in doc["checkpoints"]] == ["step-00000020"]
    assert all(pathlib.Path(c, "COMMITTED").exists() for c in doc["checkpoints"])
    assert [e["passed"] for e in doc["expectations"]] == [False, True, True]
    assert doc["expectations"][0]["lhs"] == doc["metrics"]["valid_loss"]
    assert doc["golden"]["passed"] and doc["golden"]["mode"] == "exact"

    validate_junit(junit)
    xml = JUnitXml.fromfile(str(junit))
    suites = list(xml)
    assert len(suites) == 1
    cases = list(suites[0])
    assert suites[0].tests == len(cases) == 1 + 3 + len(doc["golden"]["checks"])
    assert suites[0].failures == 1 and suites[0].errors == 0
    failing = [c for c in cases if not c.is_passed]
    assert [c.name for c in failing] == ["valid_loss<1.5"]
    assert isinstance(failing[0].result[0], Failure)
    assert "valid_loss = " in failing[0].result[0].message
    assert {c.classname for c in cases} == {"latentmoe.train", "latentmoe.expect", "latentmoe.golden"}
    root = ET.parse(junit).getroot()  # plain XML too: testsuites > testsuite > testcase
    assert root.tag == "testsuites" and root[0].tag == "testsuite"


def test_training_error_is_a_junit_error(tmp_path):
    junit = tmp_path / "junit.xml"
    result = train(tmp_path, *SHORT, "--expect", "loss<100", "--junit", str(junit),
                   env={"LATENTMOE_TEST_NAN_AT_STEP": "3"})
    assert result.returncode == 4, result.stderr[-3000:]
    validate_junit(junit)
    suite = next(iter(JUnitXml.fromfile(str(junit))))
    training = next(c for c in suite if c.classname == "latentmoe.train")
    assert isinstance(training.result[0], Error) and "non-finite" in training.result[0].message
    assert suite.errors == 1


def test_the_junit_schema_rejects_what_ci_systems_reject(tmp_path):
    import xmlschema
    schema = xmlschema.XMLSchema(str(REPO / "tests" / "python" / "junit.xsd"))
    good = '<testsuites><testsuite name="s" tests="1" failures="0" errors="0"><testcase classname="c" name="n" time="0.5"/></testsuite></testsuites>'
    assert schema.is_valid(good)
    assert not schema.is_valid(good.replace(' name="n"', ""))          # a test case needs a name
    assert not schema.is_valid(good.replace('time="0.5"', 'time="-1"'))  # times are non-negative
    assert not schema.is_valid(good.replace("<testcase", "<case"))


@pytest.mark.parametrize("expr, fragment", [
    ("valid_los<5", "unknown metric 'valid_los' (did you mean 'valid_loss'?)"),
    ("valid_loss 5", "no comparison operator"),
    ("valid_loss<5x", "'5x' is not a finite number"),
])
def test_malformed_expectation_exits_2_before_training(tmp_path, expr, fragment):
    result = train(tmp_path, *SHORT, "--expect", expr)
    assert result.returncode == 2, result.stderr
    assert f"--expect '{expr}'" in result.stderr and fragment in result.stderr
    assert not (tmp_path / "run" / "ckpt").exists()


def test_bad_golden_usage_exits_2(tmp_path, short_golden):
    no_file = train(tmp_path, *SHORT, "--golden-write")
    assert no_file.returncode == 2 and "--golden-write needs --golden FILE" in no_file.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "latentmoe-golden", "version": 1}')
    malformed = train(tmp_path, *SHORT, "--golden", str(bad))
    assert malformed.returncode == 2 and "'environment' is missing" in malformed.stderr and str(bad) in malformed.stderr
    mode = train(tmp_path, *SHORT, "--golden", str(short_golden), "--golden-mode", "strict")
    assert mode.returncode == 2 and "--golden-mode 'strict'" in mode.stderr
    no_valid = train(tmp_path, *SHORT, "--set", "data.valid_fraction=0", "--expect", "entropy_gap>0")
    assert no_valid.returncode == 2 and "data.valid_fraction=0" in no_valid.stderr
    directory = train(tmp_path, *SHORT, "--report", str(tmp_path))
    assert directory.returncode == 2 and f"--report {tmp_path}: is a directory" in directory.stderr
    unwritable = train(tmp_path, *SHORT, "--junit", "/proc/no/such/junit.xml")
    assert unwritable.returncode == 2 and "--junit /proc/no/such/junit.xml: cannot write there" in unwritable.stderr
    assert not (tmp_path / "run" / "ckpt").exists()  # all before training


def test_golden_runs_refuse_a_resumed_run_before_training(tmp_path, short_golden):
    stopped = train(tmp_path, *SHORT, "--set", "checkpoint.interval=10", env={"LATENTMOE_TEST_STOP_AFTER_STEP": "10"})
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    for extra in (["--golden", str(tmp_path / "new.json"), "--golden-write"], ["--golden", str(short_golden)]):
        resumed = train(tmp_path, *SHORT, "--resume", "auto", *extra)
        assert resumed.returncode == 2, resumed.stderr[-3000:]
        assert "a golden run is compared from step 1, but this run resumes at step 10" in resumed.stderr
        assert "step 11/" not in resumed.stderr  # refused before training
    assert not (tmp_path / "new.json").exists()
    mode_alone = train(tmp_path, *SHORT, "--golden-mode", "exact")
    assert mode_alone.returncode == 2 and "--golden-mode needs --golden FILE" in mode_alone.stderr


def test_docs_ci_lists_every_metric_and_its_workflows_parse():
    import yaml
    help_text = subprocess.run([str(binary()), "train", "--help"], capture_output=True, text=True).stdout
    metrics = re.search(r"Metrics: ([a-z_, \n]+)", help_text).group(1)
    names = [m.strip() for m in metrics.replace("\n", " ").split(",") if m.strip()]
    assert "valid_loss" in names and "tokens_per_s" in names
    doc = (REPO / "docs" / "ci.md").read_text()
    for name in names:
        assert f"`{name}`" in doc, f"docs/ci.md does not document the metric {name}"
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert len(blocks) == 2
    github, gitlab = (yaml.safe_load(b) for b in blocks)
    steps = github["jobs"]["smoke"]["steps"]
    assert any("--golden tests/golden/tiny.json" in s.get("run", "") for s in steps)
    assert gitlab["smoke-train"]["artifacts"]["reports"]["junit"] == "out/junit.xml"
    commands = [s["run"] for s in steps if "latentmoe train" in s.get("run", "")] + gitlab["smoke-train"]["script"][1:]
    assert len(commands) == 2
    for command in commands:
        assert command.startswith("build/latentmoe train --config tiny --golden tests/golden/tiny.json"), command
        assert "--junit out/junit.xml" in command
    junit_step = next(s for s in steps if "action-junit-report" in s.get("uses", ""))
    assert junit_step["with"]["report_paths"] == "out/junit.xml"
