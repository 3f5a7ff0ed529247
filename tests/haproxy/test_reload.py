"""Reloads under load: HAProxy is reloaded 5 times with -sf while both
clients keep sending requests; every old process must drain and exit on its
own (well before hard-stop-after), and no request may fail.

The load:
  curl     two threads, each a loop of requests on a new connection each
           (as `curl` in a shell loop): every reload catches handshakes
           and requests in flight on the listener being handed over
  aioquic  two long-lived connections that follow RFC 9114 5.2: after a
           GOAWAY they finish what they have and move to a new connection.
           A request the server provably did not process (reset with
           H3_REQUEST_REJECTED, or a stream id at or above the GOAWAY id
           when the connection closed) is retried on the new connection and
           counted as retried, not failed; anything else is a failure.
"""

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aqclient
import curlclient
from backend import pattern_sha256
from clients import tag

RELOADS = 5
SIZE = 2000
SHA = pattern_sha256(SIZE)


@dataclass
class Tally:
    ok: int = 0
    retried: int = 0
    ok_ids: set = field(default_factory=set)
    failures: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_ok(self, rid):
        with self.lock:
            self.ok += 1
            self.ok_ids.add(rid)

    def add_fail(self, what):
        with self.lock:
            self.failures.append(what)


def curl_loop(h, t, stop, tally, deadline, name):
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        i += 1
        rid = f"{name}.{i}"
        r = curlclient.fetch(h.url(f"/bytes/{SIZE}?t={t}&r={rid}"), timeout=6, low_speed=4)
        if r.error is None and r.status == 200 and r.length == SIZE and r.sha256 == SHA and r.h3:
            tally.add_ok(rid)
        else:
            tally.add_fail((r.error, r.status, r.length, round(r.elapsed, 2)))


def aq_loop(h, t, stop, tally, deadline):
    seq = [0, 0]

    async def one_conn(n):
        async with aqclient.connect(h.port) as c:
            while not stop.is_set() and time.monotonic() < deadline:
                if c.goaway.is_set() or c.closed.is_set():
                    return
                seq[n] += 1
                rid = f"aq{n}.{seq[n]}"
                r = await asyncio.wait_for(c.request("GET", f"/bytes/{SIZE}?t={t}&r={rid}"), 10)
                if r.ok and r.status == 200 and r.length == SIZE and r.sha256 == SHA:
                    tally.add_ok(rid)
                elif r.reset_code == aqclient.H3_REQUEST_REJECTED:
                    with tally.lock:
                        tally.retried += 1
                    return
                elif r.conn_error and c.goaway_id is not None and r.stream_id >= c.goaway_id:
                    with tally.lock:
                        tally.retried += 1
                    return
                else:
                    tally.add_fail((r.error, r.status, r.length, r.stream_id, c.goaway_id))
                    return

    async def worker(n):
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                await one_conn(n)
            except (asyncio.TimeoutError, ConnectionError, OSError) as e:
                tally.add_fail(repr(e))

    async def main():
        await asyncio.gather(worker(0), worker(1))

    aqclient.run(main(), deadline - time.monotonic() + 15)


def test_reload_under_load(binary, make_haproxy):
    h = make_haproxy(nbthread=2)
    t = tag()
    stop = threading.Event()
    deadline = time.monotonic() + 90
    curl_tally, aq_tally = Tally(), Tally()
    threads = [threading.Thread(target=curl_loop, args=(h, t, stop, curl_tally, deadline, f"curl{k}"),
                                daemon=True) for k in range(2)]
    threads.append(threading.Thread(target=aq_loop, args=(h, t, stop, aq_tally, deadline), daemon=True))
    for th in threads:
        th.start()
    # Old processes must leave by themselves, once drained: before
    # hard-stop-after (30s) in any case. The rust flavour within 10s; stock
    # keeps a process alive as long as a connection it left stalled (see
    # below) is open, so until the client gives up on it.
    exit_limit = 10 if binary.flavour == "rust" else 25
    exits = []
    try:
        time.sleep(1.0)
        for i in range(RELOADS):
            old = h.proc
            before = (curl_tally.ok, aq_tally.ok)
            h.reload(wait_old=None)
            t0 = time.monotonic()
            rc = h.wait_exit(old, exit_limit)
            exits.append((old.pid, rc, round(time.monotonic() - t0, 2)))
            # the new process serves both clients before the next reload
            end = time.monotonic() + 10
            while time.monotonic() < end and (curl_tally.ok <= before[0] + 5 or aq_tally.ok <= before[1] + 5):
                time.sleep(0.05)
            time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    assert not any(th.is_alive() for th in threads), "a load thread did not stop"
    assert all(rc == 0 for _, rc, _ in exits), f"old processes exits (pid, rc, seconds): {exits}"
    assert len(exits) == RELOADS
    assert curl_tally.ok > 50 and aq_tally.ok > 50, (curl_tally.ok, aq_tally.ok)

    if binary.flavour == "rust":
        assert not aq_tally.failures, f"aioquic: {len(aq_tally.failures)} failed: {aq_tally.failures[:5]}"
        assert not curl_tally.failures, \
            f"curl: {len(curl_tally.failures)} failed: {curl_tally.failures[:5]}"
    else:
        # Stock 3.0.11 loses a few requests on reload, in three ways only:
        # - a new connection caught by the reload is left without an answer
        #   (the request stalls until curl gives up: error 28, 0 bytes);
        # - a new connection caught by the reload is closed under the
        #   request (curl error 56, ERR_DRAINING, 0 bytes);
        # - a connection that sent GOAWAY(id) is closed with H3_NO_ERROR
        #   while a request below that id (one it promised to process) is
        #   still unanswered.
        for err, status, length, _ in curl_tally.failures:
            assert err and length == 0, curl_tally.failures
            assert err.startswith("curl error 28") or (
                err.startswith("curl error 56") and "ERR_DRAINING" in err), curl_tally.failures
        for f in aq_tally.failures:
            assert isinstance(f, tuple) and "connection closed: 0x100" in f[0] and f[3] < f[4], \
                aq_tally.failures
    lost = len(curl_tally.failures) + len(aq_tally.failures)
    assert lost <= RELOADS * 4, (curl_tally.failures, aq_tally.failures)

    # every answered request is in the log of the process that served it,
    # as an HTTP/3.0 line with status 200
    # (stock logs some of the lost ones as 200: it answered, then closed the
    # connection before the answer was delivered)
    # (and HAProxy may drop log lines under contention, counting them in
    # "N events dropped" lines)
    ok = curl_tally.ok + aq_tally.ok
    lines = h.h3_log(t, ok)
    statuses = Counter(l["st"] for l in lines)
    dropped = h.dropped_logs()
    logged_ok = {l["u"].rsplit("r=", 1)[1] for l in lines if l["st"] == "200"}
    unlogged = (curl_tally.ok_ids | aq_tally.ok_ids) - logged_ok
    # (a line missing from the log is admitted only when HAProxy counted it
    # in DroppedLogs: see hap.HAProxy.dropped_logs())
    unlogged_ok = dropped
    assert len(unlogged) <= unlogged_ok, (f"answered but not logged: {sorted(unlogged)[:10]} "
                                          f"({dropped} dropped by HAProxy's own count)")
    assert ok - unlogged_ok <= statuses["200"] <= ok + lost, (statuses, ok, lost, dropped)
    served_by = Counter(i for i, path in enumerate(h.logs)
                        for line in path.read_text().splitlines() if f"t={t}" in line)
    assert len(served_by) == RELOADS + 1, f"requests per process: {dict(served_by)}"
    print(f"reload under load: {curl_tally.ok} curl + {aq_tally.ok} aioquic requests, "
          f"{aq_tally.retried} retried after GOAWAY, failures: curl {len(curl_tally.failures)} "
          f"aioquic {len(aq_tally.failures)}, "
          f"old process exits {exits}")
