"""Connection-ID churn is bounded.

The server (haquic) keeps at most active_connection_id_limit = 4 of the
client's connection IDs, and offers the client at most as many of its own
as the client allows; each of its IDs is an entry in the worker's routing
map, removed when retired.

  over      NEW_CONNECTION_ID beyond the limit, nothing retired:
            CONNECTION_ID_LIMIT_ERROR
  retire    the client retires every ID the server gives it, 2000 times:
            one replacement per retirement, never more outstanding than
            allowed, and the routing map does not grow (flat RSS)
  rotate    the client issues a new ID retiring all earlier ones
            (Retire Prior To), 2000 times, one per round trip: the server
            retires and switches each time, and stays usable
"""

import asyncio
import time

import limits

ROUNDS = 2000


def test_cid_churn(make_haproxy):
    h = make_haproxy(nbthread=2)
    proc = limits.Proc(h.pid)

    async def over():
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            c.own_cids()
            c.inject([c.new_cid(retire_prior_to=0) for _ in range(8)])
            await limits.wait_until(c.closed.is_set, 10)
            return c.close_code

    async def retire():
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            q = c._quic
            s0 = proc.sample()
            done = most = 0
            t0 = time.monotonic()
            while done < ROUNDS and not c.closed.is_set() and time.monotonic() - t0 < 40:
                avail = list(q._peer_cid_available)
                most = max(most, len(avail) + 1)
                if not avail:
                    # the engine replaces retired IDs when it next runs the
                    # connection: give it a packet
                    c.inject([limits.ping()])
                    await asyncio.sleep(0.002)
                    continue
                q._peer_cid_available.clear()
                c.inject([limits.retire_connection_id(x.sequence_number) for x in avail])
                done += len(avail)
                await c.drain(10)
            el = time.monotonic() - t0
            await asyncio.sleep(0.5)
            s1 = proc.sample()
            r = await asyncio.wait_for(c.request("GET", "/bytes/10"), 10)
            return done, el, c.frames_in["NEW_CONNECTION_ID"], most, s1 - s0, r, c.close_code

    async def rotate():
        async with limits.connect(h.port) as c:
            await c.request("GET", "/bytes/10")
            c.own_cids()
            s0 = proc.sample()
            t0 = time.monotonic()
            n = 0
            while n < ROUNDS and not c.closed.is_set() and time.monotonic() - t0 < 40:
                before = c.frames_in["RETIRE_CONNECTION_ID"]
                c.inject([c.new_cid()])
                ok = await limits.wait_until(lambda: c.frames_in["RETIRE_CONNECTION_ID"] > before
                                             or c.closed.is_set(), 5, 0.0005)
                if not ok:
                    break
                n += 1
            el = time.monotonic() - t0
            await asyncio.sleep(0.5)
            s1 = proc.sample()
            r = await asyncio.wait_for(c.request("GET", "/bytes/10"), 10)
            return n, el, c.frames_in["RETIRE_CONNECTION_ID"], s1 - s0, r, c.close_code

    over_code = limits.aqclient.run(over(), 30)
    assert over_code == limits.CONNECTION_ID_LIMIT_ERROR, limits.error_name(over_code)

    done, el_r, issued, most, cost_r, r, code = limits.aqclient.run(retire(), 90)
    assert code is None, limits.error_name(code)
    assert done >= ROUNDS, f"only {done} retirements in {el_r:.1f} s"
    # one replacement per retirement (and the two of the handshake)
    assert issued <= done + 4, (issued, done)
    assert most <= 8, f"the server had {most} IDs outstanding at once"
    assert cost_r.rss_kb < 4 * 1024, f"RSS {limits.mb(cost_r.rss_kb)} after {done} retirements"
    assert r.ok and r.status == 200, r.error

    n, el_n, retired, cost_n, r2, code2 = limits.aqclient.run(rotate(), 90)
    assert code2 is None, limits.error_name(code2)
    assert n >= ROUNDS, f"only {n} rotations in {el_n:.1f} s"
    assert cost_n.rss_kb < 4 * 1024, f"RSS {limits.mb(cost_n.rss_kb)} after {n} rotations"
    assert r2.ok and r2.status == 200, r2.error

    limits.report("cid-churn",
                  f"8 NEW_CONNECTION_ID past the limit -> {limits.error_name(over_code)}; "
                  f"{done} RETIRE_CONNECTION_ID in {el_r:.1f} s -> {issued} NEW_CONNECTION_ID, at most {most} "
                  f"outstanding, server CPU {cost_r.cpu_s:.2f} s, RSS {limits.mb(cost_r.rss_kb)}; "
                  f"{n} rotations (Retire Prior To) in {el_n:.1f} s -> {retired} retired, "
                  f"CPU {cost_n.cpu_s:.2f} s, RSS {limits.mb(cost_n.rss_kb)}",
                  "active_connection_id_limit 4; one new ID per retirement; flat memory")
