"""Multi-host training for real: two hosts as network namespaces joined by a veth link (each with
its own address; the hostname resolves to loopback in /etc/hosts, as on stock Debian), ranks
launched by `torchrun --nnodes 2` in each, no GLOO_SOCKET_IFNAME. Each layout equals the one-host
four-rank run; a two-host checkpoint resumes on one host at another world size; a link that goes
down for good stops every rank within 30 s naming the unreachable host, one that flaps for 2 s is
ridden out; bad launcher input is named. Traffic stays inside the namespaces these tests create;
they are removed even when a test fails (and stale ones of a killed run at the next start).
Skipped, with the reason, where namespaces cannot be made (not root, no iproute2)."""
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from conftest import REPO
from test_distributed import assert_same_tensors, assert_same_training, checkpoint_tensors, free_port, rows, run, verify_committed
from test_training import SMALL

PREFIX = "lmoe-mh"
FOUR = ("--set", "train.micro_batch_size=1")  # 4 ranks x 1 sequence = SMALL's global batch of 4
TORCHRUN = pathlib.Path((REPO / ".venv-path").read_text().strip()) / "bin" / "torchrun"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    if shutil.which("ip") is None:
        return "no iproute2 (`ip`)"
    probe, link = f"{PREFIX}-probe-{os.getpid()}", f"lmp{os.getpid() % 100000}"
    try:
        for step, command in (("a network namespace", ["ip", "netns", "add", probe]),
                              ("a veth pair", ["ip", "link", "add", f"{link}a", "type", "veth", "peer", "name", f"{link}b"]),
                              ("a veth end in a namespace", ["ip", "link", "set", f"{link}a", "netns", probe]),
                              ("an address on it", ["ip", "-n", probe, "addr", "add", "10.78.0.1/24", "dev", f"{link}a"])):
            made = sh(*command, check=False)
            if made.returncode != 0:
                return f"cannot make {step}: {made.stderr.strip()}"
        return None
    finally:
        sh("ip", "link", "del", f"{link}b", check=False)
        sh("ip", "netns", "del", probe, check=False)


UNAVAILABLE = namespaces_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no multi-host harness here: {UNAVAILABLE}")


def remove_stale() -> None:
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            sh("ip", "netns", "del", name, check=False)


class Hosts:
    """Two namespaces, host i at 10.77.0.(i+1)/24 on one veth pair."""

    def __init__(self):
        remove_stale()
        tag = f"{os.getpid() % 100000}"
        self.names = [f"{PREFIX}-{tag}-{i}" for i in range(2)]
        self.links = [f"lmh{tag}a", f"lmh{tag}b"]
        self.addresses = ["10.77.0.1", "10.77.0.2"]
        for n in self.names:
            sh("ip", "netns", "add", n)
        sh("ip", "link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1])
        for n, link, address in zip(self.names, self.links, self.addresses):
            sh("ip", "link", "set", link, "netns", n)
            sh("ip", "-n", n, "addr", "add", f"{address}/24", "dev", link)
            sh("ip", "-n", n, "link", "set", link, "up")
            sh("ip", "-n", n, "link", "set", "lo", "up")

    def link(self, host: int, up: bool) -> None:
        sh("ip", "-n", self.names[host], "link", "set", self.links[host], "up" if up else "down")

    def close(self) -> None:
        for n in self.names:
            sh("ip", "netns", "del", n, check=False)


@pytest.fixture
def hosts():
    h = Hosts()
    try:
        yield h
    finally:
        for p in LAUNCHED:  # nothing outlives a test, whatever it did
            kill_group(p)
        LAUNCHED.clear()
        h.close()


def launch_hosts(hosts: Hosts, binary, out: pathlib.Path, steps: int, *extra: str, nproc: int = 2,
                 env: dict | None = None, host_env: list[dict] | None = None) -> list[subprocess.Popen]:
    """`torchrun --nnodes 2 --node-rank i` in host i's namespace; host 0 serves the rendezvous."""
    port = free_port()
    args = [str(binary), "train", *SMALL, *FOUR, "--set", f"train.steps={steps}", "--set", f"checkpoint.dir={out / 'ckpt'}",
            "--set", f"logging.dir={out / 'run'}", "--set", "parallel.timeout_s=20", *extra]
    procs = []
    for i, name in enumerate(hosts.names):
        command = ["ip", "netns", "exec", name, str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", str(nproc),
                   "--node-rank", str(i), "--master-addr", hosts.addresses[0], "--master-port", str(port),
                   "--no-python", *args]
        procs.append(start(command, {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), **(host_env or [{}, {}])[i]}))
    return procs


LAUNCHED: list[subprocess.Popen] = []


def start(command: list[str], env: dict) -> subprocess.Popen:
    """Its own process group: torchrun and its ranks are killed together (a killed torchrun alone
    would leave ranks holding the output pipe open)."""
    p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    LAUNCHED.append(p)
    return p


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    results = []
    for p in procs:
        try:
            output, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            output, _ = p.communicate()
            output += f"\n[killed by the test after {timeout} s]"
        results.append((p.returncode, output))
    return results


def run_hosts(hosts: Hosts, binary, out: pathlib.Path, steps: int, *extra: str) -> list[str]:
    results = finish(launch_hosts(hosts, binary, out, steps, *extra))
    for i, (code, output) in enumerate(results):
        assert code == 0, f"host {i} exited {code}:\n{output[-5000:]}"
    return [output for _, output in results]


@pytest.mark.parametrize("layout", [(), ("--set", "parallel.ep=2"), ("--set", "parallel.zero_stage=1")],
                         ids=["dp4", "ep2xdp2", "zero1"])
def test_two_hosts_without_an_interface_hint_equal_one_host(hosts, latentmoe_bin, tmp_path, layout):
    outputs = run_hosts(hosts, latentmoe_bin, tmp_path / "two", 10, *layout)
    assert "gloo listens on" in outputs[1] and "10.77.0.2 (the route toward MASTER_ADDR=10.77.0.1" in outputs[1]
    run(latentmoe_bin, tmp_path / "one", 4, 10, *FOUR, *layout)
    # Same ranks, same gloo algorithms, same reduction order: bit-identical.
    assert [r["loss/total"] for r in rows(tmp_path / "one")] == [r["loss/total"] for r in rows(tmp_path / "two")]
    assert [r["grad_norm"] for r in rows(tmp_path / "one")] == [r["grad_norm"] for r in rows(tmp_path / "two")]
    step = "ckpt/step-00000010"
    assert_same_tensors(checkpoint_tensors(tmp_path / "one" / step, "model"),
                        checkpoint_tensors(tmp_path / "two" / step, "model"), 0.0)
    if layout and "parallel.ep=2" in layout:  # the experts of a layer live on both hosts
        import json
        weight_map = json.loads((tmp_path / "two" / step / "model.safetensors.index.json").read_text())["weight_map"]
        assert weight_map["model.layers.1.mlp.experts.0.up_proj.weight"] != weight_map["model.layers.1.mlp.experts.7.up_proj.weight"]


def test_a_two_host_checkpoint_resumes_on_one_host_at_another_world_size(hosts, latentmoe_bin, tmp_path):
    run_hosts(hosts, latentmoe_bin, tmp_path / "two", 12, "--set", "checkpoint.interval=6")
    saved = tmp_path / "two" / "ckpt" / "step-00000006"
    verify_committed(saved)
    resumed = tmp_path / "resumed"
    shutil.copytree(saved, resumed / "ckpt" / saved.name)
    run(latentmoe_bin, resumed, 2, 12, "--resume", "auto")
    assert_same_training_tail = [r["loss/total"] for r in rows(tmp_path / "two")][6:]
    tail = [r["loss/total"] for r in rows(resumed)]
    assert len(tail) == 6
    assert max(abs(a - b) / abs(a) for a, b in zip(assert_same_training_tail, tail)) <= 1e-5


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_partition_stops_every_rank_within_30_s_naming_the_unreachable_host(hosts, latentmoe_bin, tmp_path):
    out = tmp_path / "run"
    # The default parallel.timeout_s (300): the heartbeats, not the collective timeout, find the cut.
    procs = launch_hosts(hosts, latentmoe_bin, out, 100000, "--set", "checkpoint.interval=5", "--set", "parallel.timeout_s=300")
    committed = lambda: any((out / "ckpt").glob("step-*/COMMITTED"))  # noqa: E731
    assert wait_for(committed, 120), "no checkpoint committed"
    time.sleep(1)
    hosts.link(1, up=False)
    cut = time.monotonic()
    results = finish(procs, timeout=90)
    elapsed = time.monotonic() - cut
    for i, (code, output) in enumerate(results):
        assert code != 0, f"host {i} exited 0 after the partition:\n{output[-3000:]}"
    assert elapsed <= 30, f"{elapsed:.1f} s after the cut:\n{results[0][1][-3000:]}\n{results[1][1][-3000:]}"
    assert "10.77.0.2" in results[0][1], results[0][1][-3000:]  # host 0 names host 1, host 1 names host 0
    assert "10.77.0.1" in results[1][1], results[1][1][-3000:]
    newest = sorted((out / "ckpt").glob("step-*/COMMITTED"))[-1].parent
    verify_committed(newest)
    again = tmp_path / "again"
    shutil.copytree(newest, again / "ckpt" / newest.name)
    step = int(newest.name.removeprefix("step-"))
    run(latentmoe_bin, again, 2, step + 2, "--resume", "auto")
    assert len(rows(again)) == 2


def test_a_two_second_flap_is_ridden_out(hosts, latentmoe_bin, tmp_path):
    out = tmp_path / "run"
    procs = launch_hosts(hosts, latentmoe_bin, out, 40)
    assert wait_for(lambda: (out / "run" / "metrics.jsonl").exists() and len(rows(out)) >= 5, 120)
    hosts.link(1, up=False)
    time.sleep(2)
    hosts.link(1, up=True)
    for i, (code, output) in enumerate(finish(procs)):
        assert code == 0, f"host {i} exited {code} after a 2 s flap:\n{output[-3000:]}"
    assert len(rows(out)) == 40


def test_bad_launcher_input_is_named(hosts, latentmoe_bin, tmp_path):
    missing = launch_hosts(hosts, latentmoe_bin, tmp_path / "a", 2, env={"GLOO_SOCKET_IFNAME": "eth9"})
    for code, output in finish(missing, timeout=120):
        assert code != 0
        assert "GLOO_SOCKET_IFNAME=eth9" in output and "has no interface 'eth9'" in output and "lo 127.0.0.1" in output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
           "MASTER_ADDR": "no-such-host.invalid", "MASTER_PORT": str(free_port())}
    unresolved = subprocess.run([str(latentmoe_bin), "train", *SMALL, "--set", "train.steps=2",
                                 "--set", f"checkpoint.dir={tmp_path / 'b'}", "--set", f"logging.dir={tmp_path / 'b'}"],
                                env=env, capture_output=True, text=True, timeout=60)
    assert unresolved.returncode == 2 and "MASTER_ADDR=no-such-host.invalid does not resolve" in unresolved.stderr
    # Hosts started with different configs: each names the keys that differ.
    port = free_port()
    args = [str(latentmoe_bin), "train", *SMALL, "--set", "train.steps=2", "--set", f"checkpoint.dir={tmp_path / 'c'}",
            "--set", f"logging.dir={tmp_path / 'c'}"]
    procs = []
    for i, name in enumerate(hosts.names):
        extra = ["--set", "optimizer.lr=0.001"] if i == 1 else []
        procs.append(start(["ip", "netns", "exec", name, str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1",
                            "--node-rank", str(i), "--master-addr", hosts.addresses[0], "--master-port", str(port),
                            "--no-python", *args, *extra], {**os.environ, "OMP_NUM_THREADS": "1"}))
    results = finish(procs, timeout=120)
    assert all(code != 0 for code, _ in results)
    assert "optimizer.lr: 0.003 on rank 0, 0.001 here" in results[1][1], results[1][1][-3000:]
    assert "rank 1 started with another config than rank 0" in results[0][1], results[0][1][-3000:]


def test_an_out_of_range_node_rank_is_named_on_both_hosts_within_30_s(hosts, latentmoe_bin, tmp_path):
    """torchrun's static rendezvous does not check --node-rank; with TORCH_ELASTIC_WORKER_IDENTICAL=1
    (the documented static launch) the bad node's latentmoe starts, names the flag and stops the
    other host through the store."""
    port = free_port()
    args = [str(latentmoe_bin), "train", *SMALL, "--set", "train.steps=2", "--set", f"checkpoint.dir={tmp_path / 'c'}",
            "--set", f"logging.dir={tmp_path / 'r'}", "--set", "parallel.timeout_s=300"]
    procs = []
    started = time.monotonic()
    for i, name in enumerate(hosts.names):
        procs.append(start(["ip", "netns", "exec", name, str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1",
                            "--node-rank", str(5 if i == 1 else 0), "--master-addr", hosts.addresses[0],
                            "--master-port", str(port), "--no-python", *args],
                           {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_ELASTIC_WORKER_IDENTICAL": "1"}))
    results = finish(procs, timeout=120)
    elapsed = time.monotonic() - started
    assert all(code != 0 for code, _ in results), [code for code, _ in results]
    for i, (_, output) in enumerate(results):
        assert "torchrun --node-rank 5 on host" in output and "out of range for --nnodes 2" in output, \
            f"host {i}:\n{output[-3000:]}"
        assert "node ranks are 0..1" in output
    assert elapsed < 30, f"took {elapsed:.0f} s"


def test_a_peer_that_advertises_loopback_is_named_and_nobody_waits_for_the_timeout(hosts, latentmoe_bin, tmp_path):
    """Both hosts forced onto loopback, as gloo used to bind when each hostname resolves to
    127.0.0.1 (with one side reachable, gloo connects from the other and trains): host 1's ranks
    cannot reach host 0's. They name the peer and the cause; host 0's ranks, still waiting in the
    rendezvous, learn it from the store; all exit long before the rendezvous timeout (20 s)."""
    began = time.monotonic()
    on_loopback = {"GLOO_SOCKET_IFNAME": "lo"}
    results = finish(launch_hosts(hosts, latentmoe_bin, tmp_path, 2, host_env=[on_loopback, on_loopback]), timeout=120)
    elapsed = time.monotonic() - began
    assert all(code != 0 for code, _ in results), [o[-2000:] for _, o in results]
    assert elapsed < 20, elapsed
    # Whichever host's ranks fail to connect first name the peers and the cause; the others either
    # fail the same way or learn it from the store while they wait.
    named = [o for _, o in results if "could not connect to rank" in o]
    assert named, [o[-3000:] for _, o in results]
    assert "(host vm, lo 127.0.0.1)" in named[0] and "at 127.0.0.1: a loopback address advertised to a multi-host job" in named[0]
    assert "set GLOO_SOCKET_IFNAME to the interface toward MASTER_ADDR" in named[0]
    for _, output in results:
        assert "could not connect to rank" in output or "the rendezvous of group world cannot complete: rank" in output, \
            output[-4000:]  # the whole tail: pytest's own rendering of a failed `in` truncates the middle
