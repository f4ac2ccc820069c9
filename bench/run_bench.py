"""Benchmark chatrelay against nginx and a naive Python relay with the shared SSE harness.

`make bench` runs `.venv/bin/python bench/run_bench.py --bench ../shared/bench`. This
driver checks what the harness needs (Go, nginx, the harness's own venv), then runs

    python3 <bench>/run.py compare --peers project-native,project,nginx,naive \
        --scenarios latency,throughput,concurrency --reps N

with `PROJECT_CMD` starting chatrelay from this checkout on a fresh SQLite database per
run, writes everything to `bench-results/` (git-ignored), and prints the harness's table
and a short summary of chatrelay's own figures. See bench/README.md.

    .venv/bin/python bench/run_bench.py --bench ../shared/bench            # quick: --reps 1
    .venv/bin/python bench/run_bench.py --bench ../shared/bench --reps 3   # the real numbers
    .venv/bin/python bench/run_bench.py --bench ../shared/bench --check    # prerequisites only
    .venv/bin/python bench/run_bench.py --bench ../shared/bench --setup    # go build + harness venv

Standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = REPO.parent / "shared" / "bench"
DEFAULT_RESULTS = REPO / "bench-results"
KNOWN_PEERS = ("direct", "nginx", "naive", "litellm", "project", "project-native")
PROJECT_PEERS = ("project-native", "project")
KNOWN_SCENARIOS = ("latency", "throughput", "concurrency", "concurrency5k", "concurrency10k")
# Streams each scenario holds at once (the harness's README); above chatrelay's default
# connection cap (4,096 per process) the rest would be refused with 503.
SCENARIO_STREAMS = {"concurrency": 2_000, "concurrency5k": 5_000, "concurrency10k": 10_000}
DEFAULT_MAX_CONNECTIONS = 4_096
DEFAULT_PEERS = "project-native,project,nginx,naive"
DEFAULT_SCENARIOS = "latency,throughput,concurrency"
APT_CMD = "apt-get update && apt-get install -y golang-go nginx-light"
# The harness's default ports (run.py reads BENCH_UPSTREAM_PORT / BENCH_RELAY_PORT).
UPSTREAM_PORT = int(os.environ.get("BENCH_UPSTREAM_PORT", "18080"))
RELAY_PORT = int(os.environ.get("BENCH_RELAY_PORT", "18081"))
# Client key chatrelay is started with, so the bench measures the authenticated path
# and does not depend on whatever CHATRELAY_API_KEYS a developer's `.env` sets.
BENCH_TENANT = "bench"
# The harness runs under any python3 >= 3.9 and needs nothing installed: the system one.
PYTHON3 = shutil.which("python3") or sys.executable


def say(msg: str) -> None:
    print(f"[run_bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- prerequisites


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def harness_writable(bench: Path) -> bool:
    """run.py writes bin/ (go build before every run), .venv/ (setup) and its PID file
    results/.running-<port>.json inside its own folder, whatever --results-dir says."""
    return all(
        os.access(p, os.W_OK) for p in (bench, bench / "bin", bench / "results") if p.exists()
    )


def missing_prerequisites(bench: Path, peers: list[str], *, setup: bool) -> list[str]:
    """One line per missing thing, each with the command that fixes it."""
    problems: list[str] = []
    if not (bench / "run.py").is_file():
        problems.append(f"no harness at {bench} (run.py missing): pass --bench PATH")
        return problems
    if not shutil.which("go"):
        problems.append(
            f"Go toolchain not found (the harness builds its load generator): {APT_CMD}"
        )
    if "nginx" in peers and not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        problems.append(f"nginx not found (peer nginx): {APT_CMD}")
    if not shutil.which("taskset"):
        problems.append(
            "taskset not found (pins relay/loadgen to CPUs): apt-get install -y util-linux"
        )
    if (os.cpu_count() or 1) < 2:
        problems.append("the harness pins the relay to CPU 1: it needs at least 2 cores")
    venv_peers = [p for p in peers if p in ("naive", "litellm")]
    if venv_peers and not setup and not (bench / ".venv" / "bin" / "uvicorn").exists():
        problems.append(
            f"the harness's venv is missing (peers {','.join(venv_peers)}): rerun with --setup "
            f"(= python3 {bench / 'run.py'} setup)"
        )
    if (
        any(p in PROJECT_PEERS for p in peers)
        and not (REPO / ".venv" / "bin" / "chatrelay").exists()
    ):
        problems.append(f"{REPO / '.venv/bin/chatrelay'} missing: run `make install`")
    for port in (UPSTREAM_PORT, RELAY_PORT):
        if not _port_free(port):
            problems.append(
                f"127.0.0.1:{port} is taken: stop what listens there (ss -ltnp 'sport = :{port}') "
                "or set BENCH_UPSTREAM_PORT / BENCH_RELAY_PORT"
            )
    return problems


def writable_harness(bench: Path, results: Path) -> Path:
    """A writable copy of a read-only harness under the results folder, for run.py to use.

    Only the sources are copied (not bin/, .venv/ or results/), writable by us; run.py
    builds bin/ there. The original's .venv, when it has one, is linked, not rebuilt.
    """
    copy = results / "harness"
    say(f"{bench} is not writable (run.py writes bin/ and results/.running-*.json there)")
    say(f"running a writable copy of it: {copy}")
    skip = {"bin", ".venv", "results", "__pycache__"}
    for root, dirs, files in os.walk(bench):
        dirs[:] = [d for d in dirs if d not in skip]
        target = copy / Path(root).relative_to(bench)
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        for name in files:
            if name.endswith(".pyc"):
                continue
            dest = target / name
            if dest.exists():
                dest.chmod(0o644)
            dest.write_bytes((Path(root) / name).read_bytes())
            dest.chmod(0o644)
    (copy / "results").mkdir(exist_ok=True)
    venv = copy / ".venv"
    if not venv.exists() and (bench / ".venv" / "bin" / "uvicorn").exists():
        venv.symlink_to(bench / ".venv")
    return copy


# ---------------------------------------------------------------- the run


def snapshot(ref: str, results: Path) -> Path:
    """The tree of commit `ref` (git archive, read-only for the repository) as a folder."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    folder = results / f"src-{sha[:12]}"
    if not (folder / "src" / "chatrelay").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    say(f"benchmarking commit {sha[:12]} ({ref}) from {folder}, not the working tree")
    return folder / "src"


def project_env(
    key: str,
    src: Path | None,
    *,
    workers: int = 1,
    redis_url: str | None = None,
    cpus: str | None = None,
    scenarios: Sequence[str] = (),
) -> dict[str, str]:
    """PROJECT_CMD and friends: chatrelay from this checkout, a fresh SQLite file per run.

    With `src`, the venv runs that copy of the package instead (PYTHONPATH comes before
    the editable install's path). `workers` > 1 runs `serve --workers N` on `redis_url`
    (a fresh key prefix per run); `cpus` widens the CPU affinity the harness pins the
    relay to (one core) with `taskset -c`, e.g. `0,1` to give N workers two cores.
    For `scenarios` holding more streams than chatrelay's default connection cap, the
    cap is raised to what they hold plus room for the warm-up (per process: the kernel
    does not spread connections evenly over workers).
    """
    chatrelay = shlex.quote(str(REPO / ".venv" / "bin" / "chatrelay"))
    pythonpath = f"PYTHONPATH={shlex.quote(str(src))} " if src else ""
    scale = ""
    if workers > 1:
        if not redis_url:
            raise ValueError("--workers > 1 needs --redis-url (chatrelay requires REDIS_URL)")
        scale = (
            f"REDIS_URL={shlex.quote(redis_url)} "
            "CHATRELAY_REDIS_PREFIX=bench-$(basename $BENCH_TMP): "
        )
    pin = f"taskset -c {shlex.quote(cpus)} " if cpus else ""
    streams = max((SCENARIO_STREAMS.get(s, 0) for s in scenarios), default=0)
    cap = ""
    if streams > DEFAULT_MAX_CONNECTIONS:
        cap = f"CHATRELAY_MAX_CONNECTIONS={streams + 1_000} "
    cmd = (
        f"{pythonpath}{scale}DATABASE_URL=sqlite:///$BENCH_TMP/bench.db "
        f"CHATRELAY_API_KEYS={BENCH_TENANT}:{key} "
        # One tenant drives thousands of streams: the per-tenant quotas would refuse them.
        "CHATRELAY_RATE_LIMIT_PER_MINUTE=0 CHATRELAY_MAX_GENERATIONS_PER_TENANT=0 "
        "CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE=0 "
        f"{cap}exec {pin}{chatrelay} serve --host $HOST --port $PORT --log-level warning "
        f"--workers {workers}"
    )
    return {
        "PROJECT_CMD": cmd,
        "PROJECT_CWD": str(REPO),
        "PROJECT_HEADERS": f"Authorization: Bearer {key}",
    }


def compare_argv(bench: Path, args: argparse.Namespace, jsonl: Path, summary: Path) -> list[str]:
    argv = [
        PYTHON3,
        str(bench / "run.py"),
        "compare",
        "--peers",
        ",".join(args.peers),
        "--scenarios",
        ",".join(args.scenarios),
        "--reps",
        str(args.reps),
        "--results-dir",
        str(args.results_dir),
        "--out",
        str(jsonl),
        "--summary",
        str(summary),
        "--quiet-wait",
        f"{args.quiet_wait:g}",
    ]
    base = next((p for p in args.peers if p in PROJECT_PEERS), None)
    if base:
        argv += ["--base", base]
    if args.full_caps:
        argv.append("--full-caps")
    return argv


def run_compare(argv: list[str], env: dict[str, str], table_path: Path) -> int:
    """Run the harness, echoing its table as it comes and keeping a copy of it.

    Ctrl-C reaches the harness too (same process group): it stops what it started,
    and we wait for it.
    """
    say("$ " + shlex.join(argv))
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            with open(table_path, "w", encoding="utf-8") as out:
                for line in proc.stdout:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    out.write(line)
        except KeyboardInterrupt:
            say("interrupted; waiting for the harness to stop its processes")
            proc.wait()
            return 130
    return proc.returncode


# ---------------------------------------------------------------- summary


def _n(value: Any, fmt: str = ",.0f", unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}{unit}"


def _ms(value: Any, *, sign: bool = False) -> str:
    if value is None:
        return "-"
    plus = "+" if sign else ""
    return f"{value:{plus},.2f} ms" if abs(value) < 10 else f"{value:{plus},.0f} ms"


def _cpu(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 0.01 else f"{value:.3f}"


def _ratio(a: Any, b: Any) -> str:
    """chatrelay's figure as a multiple of another peer's."""
    if a is None or b is None or a <= 0 or b <= 0:
        return "-"
    return f"{a / b:,.2f}x"


def _scenario_lines(
    scenario: str, st: dict[str, Any], others: dict[str, dict[str, Any]]
) -> list[str]:
    c = st["c"]
    per_stream = ""
    if scenario.startswith("concurrency"):
        per_stream = f" ({_n(st['rss_kb_per_stream'], ',.0f', ' KB')} per held stream)"
    failed = f"{st['failed']:,} / {st['streams']:,} failed"
    if st["mismatch"]:
        failed += f", {st['mismatch']:,} content mismatches"
    if st["run_errors"]:
        failed += f", {st['run_errors']} run error(s)"
    if st["relay_died"]:
        failed += f", relay died in {st['relay_died']} run(s)"
    if st["errors"]:
        failed += f" {st['errors']}"
    over50 = _ms(st["ttft_p50_overhead"], sign=True)
    over99 = _ms(st["ttft_p99_overhead"], sign=True)
    lines = [
        f"  {scenario} (c={c:,}):",
        f"    TTFT p50 {_ms(st['ttft_p50'])} ({over50} over direct), "
        f"p99 {_ms(st['ttft_p99'])} ({over99})",
        f"    {_n(st['events_per_s'])} events/s, {_cpu(st['cpu_s_per_1k_events'])} relay CPU s "
        f"per 1k events, RSS peak {_n(st['rss_mb_peak'], ',.0f', ' MB')}{per_stream}",
        f"    held {_n(st['held_min'])} / {c:,} streams; {failed}",
    ]
    for name, o in others.items():
        lines.append(
            f"    vs {name}: TTFT p50 over direct {_ms(o['ttft_p50_overhead'])} "
            f"(chatrelay {_ratio(st['ttft_p50_overhead'], o['ttft_p50_overhead'])}), "
            f"{_n(o['events_per_s'])} events/s "
            f"({_ratio(st['events_per_s'], o['events_per_s'])}), "
            f"CPU/1k {_cpu(o['cpu_s_per_1k_events'])} "
            f"({_ratio(st['cpu_s_per_1k_events'], o['cpu_s_per_1k_events'])}), "
            f"held {_n(o['held_min'])}, failed {o['failed']:,}"
        )
    return lines


def summary_lines(summ: dict[str, Any]) -> list[str]:
    """chatrelay's own figures per scenario, with the other relays alongside."""
    stats: dict[str, dict[str, dict[str, Any]]] = summ["stats"]
    peers: list[str] = summ["peers"]
    lines: list[str] = []
    for project in [p for p in PROJECT_PEERS if p in peers]:
        lines.append(f"chatrelay ({project}), medians over {summ.get('reps', '?')} rep(s):")
        for scenario in summ["scenarios"]:
            others: dict[str, dict[str, Any]] = {
                p: stats[scenario][p]
                for p in ("naive", "nginx", "litellm", "project")
                if p in peers and p != project
            }
            lines += _scenario_lines(scenario, stats[scenario][project], others)
    lines.append(
        "(x = chatrelay's figure as a multiple of that peer's: TTFT overhead and CPU want < 1, "
        "events/s > 1)"
    )
    noise = summ.get("other_busy_pct") or {}
    if noise.get("runs"):
        over = noise.get("runs_over_10", 0)
        lines.append(
            f"Other load on the machine: median {_n(noise.get('median'), '.0f', '%')}, "
            f"max {_n(noise.get('max'), '.0f', '%')} of all cores"
            + (
                f"; {over} of {noise['runs']} runs above 10%: rerun on a quiet machine"
                if over
                else ""
            )
        )
    return lines


def project_failed(summ: dict[str, Any]) -> bool:
    for scenario in summ["scenarios"]:
        for peer in PROJECT_PEERS:
            st = summ["stats"][scenario].get(peer)
            if st and (st["failed"] or st["mismatch"] or st["run_errors"] or st["relay_died"]):
                return True
    return False


# ---------------------------------------------------------------- main


def _csv(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {bad or value!r}; choose from {', '.join(allowed)}"
        )
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--bench",
        type=Path,
        default=Path(os.environ.get("BENCH", str(DEFAULT_BENCH))),
        help="the harness folder (default ../shared/bench beside this checkout; $BENCH)",
    )
    ap.add_argument(
        "--reps", type=int, default=1, help="repetitions (1: quick, 3: the real numbers)"
    )
    ap.add_argument(
        "--peers",
        type=lambda v: _csv(v, KNOWN_PEERS, "peer"),
        default=_csv(DEFAULT_PEERS, KNOWN_PEERS, "peer"),
        help=f"comma list (default {DEFAULT_PEERS}); direct is always added by the harness",
    )
    ap.add_argument(
        "--scenarios",
        type=lambda v: _csv(v, KNOWN_SCENARIOS, "scenario"),
        default=_csv(DEFAULT_SCENARIOS, KNOWN_SCENARIOS, "scenario"),
        help=f"comma list (default {DEFAULT_SCENARIOS})",
    )
    ap.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS,
        help="runs, logs, table and summary (default bench-results/ in the checkout)",
    )
    ap.add_argument(
        "--ref",
        metavar="COMMIT",
        help="benchmark chatrelay as of this commit (git archive into the results folder) "
        "instead of the working tree, e.g. while others edit it",
    )
    ap.add_argument(
        "--workers", type=int, default=1, help="chatrelay's `serve --workers N` (default 1)"
    )
    ap.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for --workers > 1 (default $REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    ap.add_argument(
        "--cpus",
        metavar="LIST",
        help="CPU list for chatrelay (taskset -c), overriding the harness's one core; "
        "e.g. 0,1 for --workers 2 on two cores",
    )
    ap.add_argument("--setup", action="store_true", help="run the harness's `run.py setup` first")
    ap.add_argument("--check", action="store_true", help="check prerequisites and stop")
    ap.add_argument("--dry-run", action="store_true", help="print the harness command and stop")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        metavar="S",
        help="passed to compare: wait up to S s in all for a quiet machine (0: never)",
    )
    ap.add_argument(
        "--full-caps", action="store_true", help="the scenarios' own caps, not compare's"
    )
    ap.add_argument(
        "--doc",
        type=Path,
        metavar="FILE",
        help="write the results as a page (the harness table, the machine, the date, the "
        "command, and any --micro outputs), e.g. docs/benchmarks.md",
    )
    ap.add_argument(
        "--micro",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a micro-benchmark's saved output to include in --doc (repeatable)",
    )
    ap.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 when chatrelay failed streams, mismatched content or a run broke",
    )
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    return args


def _machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in ("uvicorn", "starlette", "sse-starlette", "httpx", "httptools", "uvloop", "orjson"):
        try:
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
        except Exception:
            continue
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores"
        + (f" ({cpu})" if cpu else "")
        + f", Python {platform.python_version()}; "
        + ", ".join(versions)
    )


def write_doc(
    path: Path,
    table: Path,
    summ: dict[str, Any],
    args: argparse.Namespace,
    argv: list[str] | None,
) -> None:
    """The page `make bench` keeps in docs/: the table of medians and ratios, and how it
    was made, so a reader can tell what was measured and repeat it."""
    given = argv if argv is not None else sys.argv[1:]
    command = "bench/run_bench.py " + shlex.join(given)
    lines = [
        "# Benchmarks",
        "",
        f"Measured {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} on {_machine()}.",
        f"Command: `{command}` (what `make bench` runs, after the micro-benchmarks below; "
        f"{args.reps} interleaved rep(s); peers "
        f"{', '.join(args.peers)}, scenarios {', '.join(args.scenarios)}). The harness is "
        "`../shared/bench` (its README says what each scenario does); relay pinned to one "
        "core, SQLite with checkpoints on. `project` is chatrelay's `/v1/chat/completions`, "
        "`project-native` its own endpoint. Only ratios measured side by side in one run "
        "mean anything on this machine. Where the time and the memory go, and what limits "
        "the targets not met: [performance.md](performance.md).",
        "",
        "## End to end",
        "",
        table.read_text(encoding="utf-8").rstrip(),
        "",
        "## Summary",
        "",
        "```",
        *summary_lines(summ),
        "```",
    ]
    for micro in args.micro:
        if micro.exists():
            lines += ["", f"## {micro.stem}", "", "```", micro.read_text().rstrip(), "```"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench: Path = args.bench.expanduser()
    if not bench.is_absolute() and not bench.exists() and (REPO / bench).exists():
        bench = REPO / bench  # relative to the checkout when not found from the cwd
    bench = bench.resolve()
    args.results_dir = args.results_dir.expanduser().resolve()

    problems = missing_prerequisites(bench, args.peers, setup=args.setup)
    if problems:
        say("cannot run the benchmark:")
        for problem in problems:
            say(f"  - {problem}")
        return 2
    if args.check:
        say(f"prerequisites present (harness {bench}, Go, nginx, harness venv)")
        return 0

    args.results_dir.mkdir(parents=True, exist_ok=True)
    if not harness_writable(bench):
        bench = writable_harness(bench, args.results_dir)
    if (REPO / ".env").exists():
        say(f"note: chatrelay reads {REPO / '.env'} (cwd is the checkout); its settings apply")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    jsonl = args.results_dir / f"compare-{stamp}.jsonl"
    summary = args.results_dir / f"summary-{stamp}.json"
    table = args.results_dir / f"table-{stamp}.md"
    src = snapshot(args.ref, args.results_dir) if args.ref else None
    env = dict(
        os.environ,
        **project_env(
            secrets.token_hex(16),
            src,
            workers=args.workers,
            redis_url=args.redis_url,
            cpus=args.cpus,
            scenarios=args.scenarios,
        ),
    )
    argv_ = compare_argv(bench, args, jsonl, summary)
    if args.dry_run:
        for name in ("PROJECT_CMD", "PROJECT_CWD", "PROJECT_HEADERS"):
            print(f"{name}={shlex.quote(env[name])}")
        print(shlex.join(argv_))
        return 0

    if args.setup:
        say(f"$ {PYTHON3} {bench / 'run.py'} setup")
        subprocess.run([PYTHON3, str(bench / "run.py"), "setup"], check=True)

    say(
        f"{len(args.peers)} peers + direct x {len(args.scenarios)} scenarios x {args.reps} rep(s) "
        f"on {platform.node()} ({os.cpu_count()} cores); about 3 min per rep"
    )
    rc = run_compare(argv_, env, table)
    if rc != 0 or not summary.exists():
        say(f"the harness failed (exit {rc}); logs in {args.results_dir / 'logs'}")
        return 1
    summ: dict[str, Any] = json.loads(summary.read_text())
    print()
    for line in summary_lines(summ):
        print(line)
    print()
    print(f"runs: {jsonl}\nsummary: {summary}\ntable: {table}\nlogs: {args.results_dir / 'logs'}")
    if args.doc is not None:
        write_doc(args.doc, table, summ, args, argv)
        print(f"page: {args.doc}")
    if project_failed(summ):
        say("chatrelay failed streams or runs: see the error classes above and the relay logs")
        if args.strict:
            return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
