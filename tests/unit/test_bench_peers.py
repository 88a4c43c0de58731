"""The bench's own logic that turns measurements into the peers' figures: paired ratios,
the targets and whether each is met, the section it writes, which parts a run takes, and
the sections of docs/BENCHMARKS.md a full run keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import guidellm, peers, servers
from bench.probes import paired_ratios
from bench.report import keep_sections, write_between
from bench.run import selected


def rounds(*tok_s: float) -> list[dict[str, float]]:
    return [
        {"round": i, "tok_s": t, "ttft_p50_ms": 100.0 + i, "tpot_p50_ms": 10.0, "failed": 0}
        for i, t in enumerate(tok_s)
    ]


def burst(*p50: float) -> list[dict[str, float]]:
    return [{"burst_ttft_p50_ms": p, "burst_ttft_max_ms": p * 2} for p in p50]


RAW = {
    "ovchat": {"1": rounds(100, 120, 110), "8": rounds(400, 300, 360), "16": rounds(500, 300, 330)},
    "llama-server": {"1": rounds(125, 100, 110), "8": rounds(200, 200, 150)},
    "vllm": {"1": rounds(50, 60, 55), "8": rounds(250, 300, 240), "16": rounds(400, 260, 300)},
}
BURST = {"ovchat": burst(900, 1000, 800), "vllm": burst(300, 250, 400)}


def test_paired_ratios_are_taken_round_by_round_not_from_medians() -> None:
    # Round 2 is slow for both: its ratio is as good as the others'.
    paired = paired_ratios([100, 50, 100], [200, 100, 300])
    assert paired["per_round"] == [2.0, 2.0, 3.0]
    assert paired["median"] == 2.0


def test_summary_ratios_are_medians_of_per_round_ratios() -> None:
    summary = peers.summarize(RAW, BURST)
    ratios = summary["ratios"]
    assert ratios["ovchat_over_vllm_c8"]["per_round"] == [1.6, 1.0, 1.5]
    assert ratios["ovchat_over_vllm_c8"]["median"] == 1.5
    assert ratios["ovchat_over_llama_c8"]["per_round"] == [2.0, 1.5, 2.4]
    assert ratios["ovchat_c8_over_c1"]["per_round"] == [4.0, 2.5, 3.273]
    assert ratios["ovchat_over_llama_c1"]["per_round"] == [0.8, 1.2, 1.0]
    # ovchat / vLLM for the burst: lower is better, 3.2 means 3.2 times longer.
    assert ratios["burst_ovchat_over_vllm"]["per_round"] == [3.0, 4.0, 2.0]
    assert summary["medians"]["vllm"]["16"]["tok_s"] == 300
    assert summary["medians"]["vllm"]["16"]["min_tok_s"] == 260
    assert summary["burst_p50_ms"] == {"ovchat": 900, "vllm": 300}


def test_a_missing_peer_leaves_its_ratios_unmeasured() -> None:
    summary = peers.summarize({"ovchat": RAW["ovchat"]}, {"ovchat": BURST["ovchat"]})
    assert summary["ratios"]["ovchat_over_vllm_c8"] is None
    assert summary["ratios"]["ovchat_c8_over_c1"] is not None
    rows = {row[0]: row for row in peers.target_rows(summary["ratios"])}
    assert rows["aggregate tok/s, ovchat / vLLM CPU at c8"][2] == "not measured"


def test_targets_say_met_or_not_in_the_right_direction() -> None:
    rows = peers.target_rows(peers.summarize(RAW, BURST)["ratios"])
    met = {what: verdict for what, _, _, verdict in rows}
    assert met["aggregate tok/s, ovchat / vLLM CPU at c8"] == "yes"  # 1.5 >= 1.5
    assert met["aggregate tok/s, ovchat / vLLM CPU at c16"] == "**no**"  # 1.15
    assert met["single stream tok/s, ovchat / llama-server (`--parallel 1`)"] == "yes"
    burst_row = next(r for r in rows if r[0].startswith("TTFT p50 of a burst"))
    assert burst_row[1] == "<= 1"
    assert burst_row[3] == "**no**"  # 3x longer than vLLM's


def test_the_section_carries_its_markers_command_and_every_server() -> None:
    result = peers.finish(
        {
            "date": "2026-12-02 06:00 UTC",
            "command": "flock /tmp/ovchat-bench.lock python -m bench --only peers",
            "rounds": 3,
            "burst_rounds": 3,
            "raw": RAW,
            "burst": BURST,
            "skipped": {},
            "configs": {"vLLM CPU": {"args": "python -m vllm", "env": {"A": "1"}, "ready_s": 30}},
        }
    )
    section = peers.render(result)
    assert section.startswith(peers.START) and section.endswith(peers.END)
    assert "`flock /tmp/ovchat-bench.lock python -m bench --only peers`" in section
    assert "| llama-server --parallel 8 | 8 | 200 | 150-200 |" in section
    assert "| vllm | 16 | 300 | 260-400 |" in section
    assert "ovchat 900 ms, vllm 300 ms" in section
    assert "- vLLM CPU: `A=1 python -m vllm`; ready after 30 s" in section


def test_a_skipped_peer_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "LLAMA_BIN", Path("/nonexistent"))
    monkeypatch.setattr(peers, "VLLM_PYTHON", Path("/nonexistent/python"))
    plan = peers.plan(Path("model"), "model.gguf", (1, 8, 16))
    assert [launch.contender for launch in plan.launches] == ["ovchat"]
    assert "make bench-llamacpp" in plan.skipped["llama-server"]
    assert "make bench-vllm" in plan.skipped["vllm"]
    section = peers.render(peers.finish({"date": "d", "command": "c", "skipped": plan.skipped}))
    assert "- vllm: skipped, not installed: run `make bench-vllm`." in section


def test_llama_server_runs_one_server_per_level_with_as_many_slots(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "llama-server").touch()
    monkeypatch.setattr(peers, "LLAMA_BIN", tmp_path)
    plan = peers.plan(Path("model"), "model.gguf", (1, 8, 16))
    llama = [launch for launch in plan.launches if launch.contender == "llama-server"]
    assert [launch.levels for launch in llama] == [(1,), (8,), (16,)]
    for launch in llama:
        parallel = launch.cmd[launch.cmd.index("--parallel") + 1]
        assert (int(parallel),) == launch.levels
    # The burst of 8 goes to the server with 8 slots.
    assert [launch.levels for launch in llama if launch.burst] == [(8,)]


def test_a_burst_only_run_replaces_only_the_burst_figures() -> None:
    previous = {"date": "then", "command": "full", "raw": RAW, "burst": BURST, "rounds": 3}
    again = {"date": "now", "command": "burst", "burst": {"ovchat": burst(200)}, "burst_rounds": 1}
    merged = peers.merge_burst(previous, again)
    assert merged["raw"] is RAW and merged["date"] == "then"
    assert merged["burst"] == {"ovchat": burst(200)}
    assert (merged["burst_date"], merged["burst_command"]) == ("now", "burst")
    assert "Re-measured alone now with `burst`." in peers.render(peers.finish(merged))


def test_parts_selected() -> None:
    assert "burst" not in selected("", "")
    assert "peers" in selected("", "")
    assert selected("", "peers") == {"peers"}
    assert selected("", "burst") == {"burst"}
    assert "shootout" not in selected("shootout", "")
    with pytest.raises(SystemExit, match="unknown parts"):
        selected("", "nothing")


def test_a_full_report_keeps_every_section_measured_apart() -> None:
    previous = (
        "# Benchmarks\n\n<!-- ab:start -->\nab table\n<!-- ab:end -->\n\n## Targets\nold\n\n"
        "<!-- speculation:start -->\nspec\n<!-- speculation:end -->\n"
    )
    document = "# Benchmarks\n\nintro\n\n## Targets\nnew\n"
    kept = keep_sections(previous, document)
    assert kept.index("ab table") < kept.index("spec") < kept.index("## Targets")
    assert "old" not in kept and "new" in kept


def test_write_between_replaces_a_section_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\n## Targets\nt\n")
    write_between(doc, peers.START, peers.END, f"{peers.START}\none\n{peers.END}", "## Targets")
    write_between(doc, peers.START, peers.END, f"{peers.START}\ntwo\n{peers.END}", "## Targets")
    text = doc.read_text()
    assert "one" not in text
    assert text.index("two") < text.index("## Targets")


def test_guidellm_report_read(tmp_path: Path) -> None:
    def stat(median: float, total: float = 0) -> dict[str, float]:
        return {"median": median, "total_sum": total}

    report = {
        "benchmarks": [
            {
                "duration": 8.0,
                "metrics": {
                    "request_totals": {"successful": 4, "errored": 1, "incomplete": 0},
                    "output_token_count": {"successful": stat(16, 512)},
                    "time_to_first_token_ms": {"successful": stat(120.5)},
                    "inter_token_latency_ms": {"successful": stat(9.5)},
                },
            }
        ]
    }
    path = tmp_path / "g.json"
    path.write_text(json.dumps(report))
    assert guidellm.read_report(path) == {
        "output_tok_s": 64.0,
        "ttft_p50_ms": 120.5,
        "itl_p50_ms": 9.5,
        "successful": 4,
        "failed": 1,
    }


def test_guidellm_command_is_offline_and_fixed_length() -> None:
    cmd = guidellm.command(
        Path("guidellm"), "http://h:1", Path("/tok"), 8, 16, 64, 128, Path("o.json")
    )
    assert "kind=huggingface_auto,model=/tok" in cmd
    assert "kind=synthetic_text,prompt_tokens=64,output_tokens=128" in cmd
    assert "kind=concurrent,streams=8" in cmd
    assert "kind=max_requests,count=16" in cmd


def test_vllm_env_sizes_its_cache_and_stays_offline() -> None:
    env = servers.vllm_env({"PATH": "/bin"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(servers.VLLM_KV_CACHE_GIB)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PATH"] == "/bin"


def test_ovchat_env_puts_this_checkout_first() -> None:
    env = servers.ovchat_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(":") == [str(servers.ROOT), "/elsewhere"]
    assert servers.ovchat_env({})["PYTHONPATH"] == str(servers.ROOT)


def test_llama_threads_for_every_level_or_per_level() -> None:
    assert peers.parse_threads("", (1, 8)) == {}
    assert peers.parse_threads("1", (1, 8)) == {1: 1, 8: 1}
    assert peers.parse_threads("1:2,8:1", (1, 8, 16)) == {1: 2, 8: 1}
