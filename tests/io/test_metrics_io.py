"""Metric samples as records: Influx line protocol, Telegraf JSON, file sources, and `collect_host`."""

from __future__ import annotations

import json
import socket

import psutil
import pytest

from vigil.cli.collect_host import collect_host, to_influx_line
from vigil.errors import ConfigError
from vigil.io.metrics import (
    InfluxDecoder,
    InfluxLineFileSource,
    TelegrafJsonFileSource,
    decode_kafka_values,
    parse_influx_lines,
    parse_telegraf_json,
)
from vigil.testing.sources import check_source

T_NS = 1_700_000_000_000_000_000
T_MS = 1_700_000_000_000


def rows(recs):
    return list(zip(recs.keys.tolist(), recs.ts_ms.tolist(), recs.extra["metric"].tolist(),
                    recs.cols["value"].tolist()))


def reasons(recs):
    return [(d.position, d.message) for d in recs.dead]


def codes(recs):
    return [d.reason for d in recs.dead]


# -- Influx line protocol -------------------------------------------------------------------------


def test_influx_fields_types_and_tags():
    recs = parse_influx_lines([
        f"cpu,host=h1,cpu=cpu0 usage_user=12.5,usage_system=3i,ctx=7u,flag=true,state=\"ok\" {T_NS}".encode(),
        f"system,host=h1 load1=-1.5e-1,up=F {T_NS + 2_000_000}".encode(),
    ], source="t", first_position=1)
    assert rows(recs) == [
        ("h1", T_MS, "cpu.usage_user:cpu=cpu0", 12.5),
        ("h1", T_MS, "cpu.usage_system:cpu=cpu0", 3.0),
        ("h1", T_MS, "cpu.ctx:cpu=cpu0", 7.0),
        ("h1", T_MS + 2, "system.load1", -0.15),
    ]
    assert recs.dead == []


def test_influx_escapes_and_quoted_strings():
    lines = [
        # measurement with escaped space and comma; tag key/value with escaped space, comma, equals
        rf"disk\ io\,x,host=web\ 1,path=/a\,b\=c,my\ tag=v used=1 {T_NS}",
        # string fields holding spaces, commas, '=' and escaped quotes are skipped; the numeric one stays
        rf'proc,host=h msg="a, b=c \"quoted\" d",pid=42i,note="x y" {T_NS}',
        # escaped field key
        rf"m,host=h f\ 1\,x\=y=2.5 {T_NS}",
    ]
    recs = parse_influx_lines([s.encode() for s in lines])
    assert rows(recs) == [
        ("web 1", T_MS, "disk io,x.used:my tag=v,path=/a,b=c", 1.0),
        ("h", T_MS, "proc.pid", 42.0),
        ("h", T_MS, "m.f 1,x=y", 2.5),
    ]
    assert recs.dead == []


@pytest.mark.parametrize(("precision", "stamp"), [("ns", T_NS), ("us", T_NS // 1000), ("ms", T_MS), ("s", T_MS // 1000)])
def test_influx_precision(precision, stamp):
    recs = parse_influx_lines([f"m,host=a v=1 {stamp}".encode()], precision=precision)
    assert recs.ts_ms.tolist() == [T_MS]


def test_influx_bad_lines_become_dead_letters_with_reasons():
    lines = [
        b"# a comment",
        b"",
        f"cpu,host=a v=1 {T_NS}".encode(),
        f"cpu,host=a v=abc {T_NS}".encode(),
        f"cpu,host=a v=nan {T_NS}".encode(),
        b"cpu,host=a v=1 12x",
        b"cpu,host=a",
        f"cpu,host v=1 {T_NS}".encode(),
        f"cpu,dc=x v=1 {T_NS}".encode(),
        b"cpu,host=a v=1",
        f"cpu,host=a v=1 {T_MS}".encode(),  # ms sent as ns: January 1970
        f'cpu,host=a s="open v=1 {T_NS}'.encode(),
        b"\xff\xfe v=1",
        f"cpu,host=a v=1 {T_NS} extra".encode(),
        f"cpu,host=a s=\"only text\",up=true {T_NS}".encode(),  # no numeric field: counted, never silently gone
    ]
    recs = parse_influx_lines(lines, source="f", first_position=1)
    assert len(recs) == 1
    got = reasons(recs)
    assert [p for p, _ in got] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert codes(recs) == ["wrong_type", "not_finite", "invalid_timestamp", "invalid_line", "invalid_line",
                           "missing_field", "missing_field", "absurd_timestamp", "invalid_line", "invalid_utf8",
                           "invalid_line", "no_numeric_field"]
    assert got[11][1] == "no numeric field (only text or booleans: `s`, `up`): nothing to score"
    assert "`v` value 'abc' is not a number" in got[0][1]
    assert "not finite" in got[1][1]
    assert "timestamp '12x' is not an integer" in got[2][1]
    assert "no field set" in got[3][1]
    assert "tag 'host' is not key=value" in got[4][1]
    assert "no `host` tag" in got[5][1]
    assert "no timestamp" in got[6][1]
    assert "outside" in got[7][1] and "precision" in got[7][1]
    assert "unterminated string" in got[8][1]
    assert got[9][1] == "invalid UTF-8 at byte 0"
    assert "space-separated parts" in got[10][1]
    assert all(d.source == "f" for d in recs.dead)
    assert recs.dead[0].raw == f"cpu,host=a v=abc {T_NS}"


def test_influx_options_default_host_time_and_tag_folding():
    dec = InfluxDecoder(default_host="fallback", default_time_ms=lambda: T_MS + 5, ignore_tags=["dc"])
    recs = dec.decode([b"cpu,dc=eu,cpu=1 v=1", f"cpu,host=h,dc=eu v=2 {T_NS}".encode()])
    assert rows(recs) == [("fallback", T_MS + 5, "cpu.v:cpu=1", 1.0), ("h", T_MS, "cpu.v", 2.0)]
    flat = parse_influx_lines([f"cpu,host=h,cpu=1 v=1 {T_NS}".encode()], fold_tags=False)
    assert flat.extra["metric"].tolist() == ["cpu.v"]
    assert parse_influx_lines([f"cpu,node=n1 v=1 {T_NS}".encode()], host_tag="node").keys.tolist() == ["n1"]
    with pytest.raises(ConfigError, match="precision"):
        InfluxDecoder("h")


def test_to_influx_line_round_trips_through_the_parser():
    line = to_influx_line("disk io", {"host": "web 1,a=b", "path": "/x y"}, {"f 1": 2.5, "g": 1e-7}, T_NS)
    recs = parse_influx_lines([line.encode()])
    assert rows(recs) == [("web 1,a=b", T_MS, "disk io.f 1:path=/x y", 2.5), ("web 1,a=b", T_MS, "disk io.g:path=/x y", 1e-7)]


# -- Telegraf JSON ---------------------------------------------------------------------------------


def test_telegraf_json_single_batch_units_and_bad_lines():
    one = {"fields": {"usage_idle": 90.5, "n": 3, "on": True, "s": "x"}, "name": "cpu",
           "tags": {"host": "h1", "cpu": "cpu-total"}, "timestamp": 1_700_000_000}
    batch = {"metrics": [{"fields": {"load1": 0.25}, "name": "system", "tags": {"host": "h2"}, "timestamp": 1_700_000_001},
                         {"fields": {"x": 1}, "name": "m", "tags": {}, "timestamp": 1_700_000_001}]}
    lines = [json.dumps(one).encode(), json.dumps(batch).encode(), b"{oops", b'{"name":"m","fields":{},"tags":{"host":1},"timestamp":1}',
             b'{"name":"m","fields":{"v":1},"tags":{"host":"h"}}']
    recs = parse_telegraf_json(lines, first_position=1)
    assert rows(recs) == [
        ("h1", T_MS, "cpu.usage_idle:cpu=cpu-total", 90.5),
        ("h1", T_MS, "cpu.n:cpu=cpu-total", 3.0),
        ("h2", T_MS + 1000, "system.load1", 0.25),
    ]
    got = reasons(recs)
    assert [p for p, _ in got] == [2, 3, 4, 5]
    assert codes(recs) == ["missing_field", "invalid_json", "wrong_type", "missing_field"]
    assert got[0][1] == "metrics[1]: no `host` tag (set default_host to accept untagged samples)"
    assert got[1][1].startswith("not valid JSON")
    assert got[2][1] == "`tags` values must be text"
    assert got[3][1] == "missing `timestamp`"
    ms = parse_telegraf_json([b'{"name":"m","fields":{"v":1},"tags":{"host":"h"},"timestamp":1700000000123}'],
                             json_timestamp_units="1ms")
    assert ms.ts_ms.tolist() == [T_MS + 123]
    with pytest.raises(ConfigError, match="json_timestamp_units"):
        parse_telegraf_json([], json_timestamp_units="1h")


def test_decode_kafka_values_multi_line_messages_and_tombstones():
    values = [f"cpu,host=a x=1 {T_NS}\nmem,host=a y=2 {T_NS}".encode(), None, f"bad line\ncpu,host=b x=3 {T_NS}".encode()]
    recs, msg = decode_kafka_values(values, source="kafka:m")
    assert rows(recs) == [("a", T_MS, "cpu.x", 1.0), ("a", T_MS, "mem.y", 2.0), ("b", T_MS, "cpu.x", 3.0)]
    assert msg.tolist() == [0, 0, 2]
    assert [(d.position, d.raw) for d in recs.dead] == [(1, ""), (2, "bad line")]
    j, jm = decode_kafka_values([b'{"name":"m","fields":{"v":1},"tags":{"host":"h"},"timestamp":1700000000}'], "json")
    assert rows(j) == [("h", T_MS, "m.v", 1.0)] and jm.tolist() == [0]


# -- file sources ----------------------------------------------------------------------------------


def _influx_file(tmp_path):
    lines = []
    for i in range(40):
        host = f"h{i % 3}"
        if i % 7 == 3:
            lines.append(f"cpu,host={host} user=oops {T_NS + i * 10**9}")
        elif i % 11 == 5:
            lines.append(f'log,host={host} msg="text only" {T_NS + i * 10**9}')
        else:
            fields = ",".join(f"f{j}={i + j / 10}" for j in range(1 + i % 4))
            lines.append(f"cpu,host={host},cpu=cpu{i % 2} {fields} {T_NS + i * 10**9}")
    p = tmp_path / "m.influx"
    p.write_text("\n".join(lines) + "\n\n# end\n")
    return p


def test_influx_file_source_conformance_with_lines_cut_by_max_items(tmp_path):
    p = _influx_file(tmp_path)
    totals = check_source(lambda: InfluxLineFileSource(p), max_items=(1, 2, 3, 64))
    assert totals["dead"] == 6 + 3 and totals["records"] > 40  # 6 `oops`, 3 text-only (no_numeric_field)


def test_influx_file_source_resumes_inside_a_line(tmp_path):
    p = tmp_path / "m.influx"
    p.write_text(f"cpu,host=a x=1,y=2,z=3 {T_NS}\nmem,host=a u=4 {T_NS}\n")
    r = InfluxLineFileSource(p).open()
    assert r.read_batch(2, 10).extra["metric"].tolist() == ["cpu.x", "cpu.y"]
    pos = r.position()
    assert pos == [0, 2]
    r2 = InfluxLineFileSource(p).open(resume=pos)
    got = []
    while not r2.at_end:
        b = r2.read_batch(10, 10)
        got += b.extra["metric"].tolist() if b is not None else []
    assert got == ["cpu.z", "mem.u"]
    assert r2.position() == p.stat().st_size


def test_telegraf_json_file_source_conformance(tmp_path):
    p = tmp_path / "m.json"
    out = []
    for i in range(25):
        if i % 6 == 2:
            out.append("{broken")
            continue
        fields = {f"f{j}": i + j for j in range(1 + i % 3)}
        out.append(json.dumps({"fields": fields, "name": "cpu", "tags": {"host": f"h{i % 2}"}, "timestamp": 1_700_000_000 + i}))
    p.write_text("\n".join(out) + "\n")
    totals = check_source(lambda: TelegrafJsonFileSource(p), max_items=(1, 2, 5, 100))
    assert totals["dead"] == 4


# -- collect_host round trip ---------------------------------------------------------------------


def _read_all(source):
    r = source.open()
    got, dead = [], []
    while not r.at_end:
        b = r.read_batch(10_000, 100)
        if b is not None:
            got += rows(b)
            dead += b.dead
    r.close()
    return got, dead


@pytest.mark.parametrize("fmt", ["influx", "json"])
def test_collect_host_round_trip(tmp_path, fmt):
    out = tmp_path / f"host.{fmt}"
    n = collect_host(interval_s=0.2, format=fmt, out=str(out), count=3, json_timestamp_units="1ms")
    assert n == 3
    source = InfluxLineFileSource(out) if fmt == "influx" else TelegrafJsonFileSource(out, json_timestamp_units="1ms")
    got, dead = _read_all(source)
    assert dead == []
    host = socket.gethostname()
    assert {h for h, *_ in got} == {host}
    metrics = {m for _, _, m, _ in got}
    expected = {"cpu.usage_user", "cpu.usage_system", "cpu.usage_idle", "mem.used_percent", "mem.available_percent",
                "net.bytes_recv_per_s", "net.packets_sent_per_s", "system.load1"}
    if psutil.disk_io_counters() is not None:
        expected |= {"diskio.read_bytes_per_s", "diskio.write_bytes_per_s"}
    assert expected <= metrics
    assert len({t for _, t, _, _ in got}) == 3  # one timestamp per sample
    per = {m: [v for _, _, mm, v in got if mm == m] for m in metrics}
    assert all(len(v) == 3 for v in per.values())
    assert all(0 <= v <= 100 for v in per["mem.used_percent"] + per["cpu.usage_user"])
    assert all(v >= 0 for v in per["net.bytes_recv_per_s"])


def test_collect_host_appends_and_validates(tmp_path):
    out = tmp_path / "h.influx"
    collect_host(interval_s=0.05, out=str(out), count=1, host="box-1")
    collect_host(interval_s=0.05, out=str(out), count=1, host="box-1")
    got, _ = _read_all(InfluxLineFileSource(out))
    assert len({t for _, t, _, _ in got}) == 2 and {h for h, *_ in got} == {"box-1"}
    with pytest.raises(ConfigError, match="interval"):
        collect_host(interval_s=0, count=1)
    with pytest.raises(ConfigError, match="format"):
        collect_host(format="xml", count=1)  # type: ignore[arg-type]


@pytest.mark.kafka
def test_collect_host_to_kafka(kafka_bootstrap, kafka_topic):
    from confluent_kafka import Consumer, TopicPartition

    topic = kafka_topic(partitions=1)
    collect_host(interval_s=0.1, format="influx", out=f"kafka://{kafka_bootstrap}/{topic}", count=2, host="kh")
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "vigil-test-collect", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    values = []
    for _ in range(50):
        values += [m.value() for m in c.consume(100, timeout=0.2) if m.error() is None]
        if len(values) >= 8:
            break
    c.close()
    recs, _ = decode_kafka_values(values)
    assert recs.dead == [] and set(recs.keys.tolist()) == {"kh"}
    assert "cpu.usage_user" in set(recs.extra["metric"].tolist())


def test_collect_host_network_totals_leave_out_loopback():
    """Was: `net` summed every interface, loopback included (a machine talking to itself looked busy)."""
    from types import SimpleNamespace as NS

    from vigil.cli.collect_host import net_totals

    def nic(n):
        return NS(bytes_sent=n, bytes_recv=2 * n, packets_sent=3 * n, packets_recv=4 * n)

    ps = NS(net_io_counters=lambda pernic: {"lo": nic(1_000_000), "eth0": nic(10), "wlan0": nic(5)},
            net_if_stats=lambda: {"lo": NS(flags="up,loopback,running"), "eth0": NS(flags="up,broadcast"),
                                  "wlan0": NS(flags="up,broadcast")},
            net_if_addrs=lambda: {})
    assert net_totals(ps) == {"bytes_sent": 15, "bytes_recv": 30, "packets_sent": 45, "packets_recv": 60}
    # without interface flags (older psutil, other OSes): by the addresses
    ps.net_if_stats = lambda: {}
    ps.net_if_addrs = lambda: {"lo": [NS(address="127.0.0.1"), NS(address="::1"), NS(address="00:00:00:00:00:00")],
                               "eth0": [NS(address="192.0.2.2"), NS(address="fe80::fc:ff:fe00:1%eth0")],
                               "wlan0": [NS(address="fd00::2")]}
    assert net_totals(ps)["bytes_sent"] == 15
