"""The per-slice collector renders valid exposition text with slice and herd labels."""

from __future__ import annotations

from prometheus_client import exposition, parser

from runink.agent import _cgroups, _metrics


class FakeSource:
    def stats(self) -> list[_metrics.SliceStats]:
        return [
            _metrics.SliceStats(
                "team.a.1234", "a", "team", _cgroups.Usage(1.5, 1024, 2048, 3, 1), {"rows total": 7}
            ),
            _metrics.SliceStats("team.b.5678", "b", "team", _cgroups.Usage(0.5, 10, 20, 1, 0)),
        ]


def test_slice_series_and_step_gauges() -> None:
    text = exposition.generate_latest(_metrics.make_registry(FakeSource())).decode()
    samples = {
        (s.name, s.labels.get("slice")): s.value
        for fam in parser.text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("runink_slice_cpu_seconds_total", "a")] == 1.5
    assert samples[("runink_slice_memory_bytes", "b")] == 10
    assert samples[("runink_slice_pids", "a")] == 3
    assert samples[("runink_slice_oom_kills_total", "a")] == 1
    assert samples[("runink_step_rows_total", "a")] == 7
    assert ("runink_step_rows_total", "b") not in samples
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
