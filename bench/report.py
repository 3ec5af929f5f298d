"""Markdown tables from the newest result of each benchmark in bench/results/.

Run: ``python bench/report.py`` (paste the output into bench/README.md).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def newest(name: str, predicate: Any = None) -> dict[str, Any] | None:
    for path in sorted(glob.glob(os.path.join(HERE, "results", f"{name}-*.json")), reverse=True):
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
        if predicate is None or predicate(data):
            data["_file"] = os.path.relpath(path, HERE)
            return data
    return None


def num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cpu_per_packet() -> None:
    data = newest("cpu_per_packet")
    if data is None:
        return
    print(
        f"### CPU per forwarded packet (`{data['_file']}`, sfu {str(data.get('sfu_commit'))[:8]})\n"
    )
    print(
        "| listeners | C floor sendto µs | C floor sendmmsg µs | compiled µs total / marginal "
        "| compiled × sendto floor (total / marginal) | compiled × sendmmsg floor (total / marginal) "
        "| Python µs total / marginal | Python × sendto floor | Python ÷ compiled | loss compiled / Python "
        "| server core compiled / Python |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in data["summary"]:
        print(
            f"| {e['listeners']} | {num(e['floor_us'])} | {num(e.get('batched_floor_us'))} "
            f"| {num(e.get('compiled_total_us'))} / {num(e.get('compiled_marginal_us'))} "
            f"| {num(e.get('compiled_total_x_floor'))} / {num(e.get('compiled_marginal_x_floor'))} "
            f"| {num(e.get('compiled_total_x_batched'))} / {num(e.get('compiled_marginal_x_batched'))} "
            f"| {num(e.get('python_total_us'))} / {num(e.get('python_marginal_us'))} "
            f"| {num(e.get('python_total_x_floor'))} | {num(e.get('python_x_compiled_total'))} "
            f"| {pct(e.get('compiled_loss'))} / {pct(e.get('python_loss'))} "
            f"| {pct(e.get('compiled_cpu_share'), 0)} / {pct(e.get('python_cpu_share'), 0)} |"
        )
    print()


def pct(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def max_listeners() -> None:
    # The newest result for each speaker count (a run may do only some).
    results: dict[int, dict[str, Any]] = {}
    files = []
    for path in sorted(
        glob.glob(os.path.join(HERE, "results", "max_listeners-*.json")), reverse=True
    ):
        with open(path) as f:
            run = json.load(f)
        for result in run["results"]:
            if result["speakers"] not in results:
                results[result["speakers"]] = result
                files.append(os.path.relpath(path, HERE))
    if not results:
        return
    data = {"results": [results[k] for k in sorted(results)]}
    names = ", ".join(f"`{name}`" for name in sorted(set(files)))
    print(f"### Maximum listeners on one core ({names})\n")
    print(
        "| speakers | listeners held | stopped at | because | C floor µs/packet | the floor would hold | held × the floor's |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|")
    for result in data["results"]:
        last = result["steps"][-1]["listeners"] if result["steps"] else "–"
        # Runs before the twenty-fifth session did not measure the floor.
        floor = result.get("floor", {})
        print(
            f"| {result['speakers']} | {result['max_listeners']} | {last} | {result['stopped_because']} "
            f"| {num(floor.get('us_per_packet'))} | {result.get('floor_listeners', '–')} "
            f"| {num(result.get('held_x_floor'))} |"
        )
    print("\nEvery step (exact counts per listener):\n")
    print(
        "| speakers | listeners | packets/s out | loss | worst listener | server core | load generator core | server backlog s | worst loop lag ms | server starved (run-queue wait > 10 %) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for result in data["results"]:
        for step in result["steps"]:
            # Speaking time: each speaker sends 50 packets/s (the window also
            # holds the pauses around it).
            speaking = step["speaker_packets"] / (50 * result["speakers"])
            rate = step["delivered"] / speaking if speaking else 0
            print(
                f"| {result['speakers']} | {step['listeners']} | {rate:,.0f} | {pct(step['loss'], 3)} "
                f"| {pct(step['worst_listener_loss'])} | {pct(step['server_cpu_share'], 0)} "
                f"| {pct(step['loadgen_cpu_share'], 0)} | {num(step.get('server_backlog_s'))} "
                f"| {num(step['server_lag_worst_ms'], 0)} | {'yes' if step.get('contended') else ''} |"
            )
    print()


def idle_cost() -> None:
    data = newest("idle_cost")
    if data is None:
        return
    print(f"### Idle cost (`{data['_file']}`)\n")
    print(
        "| listeners | server core, idle room | baseline (no listener) | µs per listener per s (net / raw) | KB per listener | RSS MB (before → after) |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {data['listeners']} | {pct(data['loaded']['server_cpu_rate'])} | {pct(data['baseline']['server_cpu_rate'])} "
        f"| {num(data['us_per_listener_second_net'], 1)} / {num(data['us_per_listener_second_raw'], 1)} "
        f"| {num(data['bytes_per_listener'] / 1024, 1)} "
        f"| {data['baseline']['rss'] / 2**20:.0f} → {data['loaded']['rss'] / 2**20:.0f} |"
    )
    print()


def join_storm() -> None:
    rows = []
    seen = set()
    for path in sorted(glob.glob(os.path.join(HERE, "results", "join_storm-*.json")), reverse=True):
        with open(path) as f:
            data = json.load(f)
        key = (data["listeners"], data["concurrency"])
        if key not in seen:
            seen.add(key)
            data["_file"] = os.path.relpath(path, HERE)
            rows.append(data)
    if not rows:
        return
    print("### Join storm\n")
    print(
        "| listeners | in flight | joined | joins/s | offer→answer p50 / p99 ms | offer→first packet p50 / p99 / max ms "
        "| all hear audio | worst loop lag ms | server CPU s | file |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for d in sorted(rows, key=lambda d: d["concurrency"], reverse=True):
        a, f = d["offer_to_answer"], d["offer_to_first_packet"]
        print(
            f"| {d['listeners']} | {d['concurrency']} | {d['joined']} | {d['joins_per_second']} "
            f"| {num(a['p50_ms'], 0)} / {num(a['p99_ms'], 0)} | {num(f['p50_ms'], 0)} / {num(f['p99_ms'], 0)} / {num(f['max_ms'], 0)} "
            f"| {'yes' if d['all_receive_audio'] else 'NO'} | {num(d['server_lag_worst_ms'], 0)} | {d['server_cpu_s']} | `{d['_file']}` |"
        )
    print()


def latency() -> None:
    data = newest("latency")
    if data is None:
        return
    print(f"### Fan-out latency (`{data['_file']}`)\n")
    print(
        "| listeners | packets (all copies) | first copy p50 / p99 ms | last copy p50 / p99 / max ms | spread p50 / p99 ms |"
    )
    print("|---:|---:|---:|---:|---:|")
    f, last, s = data["first_copy"], data["last_copy"], data["spread"]
    print(
        f"| {data['listeners']} | {data['packets_with_all_copies']} / {data['packets_sent']} "
        f"| {num(f['p50_ms'], 2)} / {num(f['p99_ms'], 2)} "
        f"| {num(last['p50_ms'], 2)} / {num(last['p99_ms'], 2)} / {num(last['max_ms'], 2)} "
        f"| {num(s['p50_ms'], 2)} / {num(s['p99_ms'], 2)} |"
    )
    print()


def janus_fanout() -> None:
    """The optional Janus column (``janus_fanout.py``): the newest result per
    Janus ``event_loops`` setting, each beside sfu and the C floor of its run."""
    settings: dict[int, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(HERE, "results", "janus_fanout-*.json"))):
        with open(path) as f:
            data: dict[str, Any] = json.load(f)
        if data["args"].get("janus_only"):
            continue  # no sfu or floor in that run
        data["_file"] = os.path.relpath(path, HERE)
        settings[data["janus"]["event_loops"]] = data
    for loops, data in sorted(settings.items()):
        mode = f"{loops} shared event loop(s)" if loops else "a loop and thread per handle"
        print(
            f"### Janus {data['janus']['version']} VideoRoom, {mode} "
            f"(`{data['_file']}`, sfu {str(data.get('sfu_commit'))[:8]})\n"
        )
        print(
            "| listeners | C floor sendto µs | sfu compiled µs total / marginal | sfu × floor "
            "| Janus µs total / marginal | Janus × floor | Janus ÷ sfu (total / marginal) "
            "| loss sfu / Janus | core sfu / Janus | Janus threads | others on the core in Janus's window |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows = {row["listeners"]: row for row in data["rows"] if row["path"] == "janus"}
        for e in data["summary"]:
            row = rows.get(e["listeners"], {})
            speaking = row.get("speaking", {})
            marginal = None
            if e.get("janus_marginal_us") is not None and e.get("compiled_marginal_us"):
                marginal = e["janus_marginal_us"] / e["compiled_marginal_us"]
            others = speaking.get("server_cpu_others_s")
            busy = "–" if others is None else f"{others:.2f} s of {speaking['seconds']:.1f}"
            print(
                f"| {e['listeners']} | {num(e.get('floor_us'))} "
                f"| {num(e.get('compiled_total_us'))} / {num(e.get('compiled_marginal_us'))} "
                f"| {num(e.get('compiled_total_x_floor'))} "
                f"| {num(e.get('janus_total_us'))} / {num(e.get('janus_marginal_us'))} "
                f"| {num(e.get('janus_total_x_floor'))} "
                f"| {num(e.get('janus_x_compiled_total'))} / {num(marginal)} "
                f"| {pct(e.get('compiled_loss'))} / {pct(e.get('janus_loss'))} "
                f"| {pct(e.get('compiled_cpu_share'), 0)} / {pct(e.get('janus_cpu_share'), 0)} "
                f"| {row.get('janus_threads', '–')} "
                f"| {busy} |"
            )
        print()


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    cpu_per_packet()
    max_listeners()
    idle_cost()
    join_storm()
    latency()
    janus_fanout()
