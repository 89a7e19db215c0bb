"""How the broadcaster hands messages to event streams: an unrecorded revocation
published on a stream's own loop is in its queue at once (a revoked execution runs on
for every loop iteration in between); everything else goes through the loop, in the
order published, and a stream misses none of it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from proctor.governor.stream import Broadcaster, early_revocation, sse_stream


def recorded(seq: int) -> dict[str, Any]:
    return {"type": "revocation", "seq": seq, "kind": "execution", "target": f"ex_{seq}"}


def test_an_unrecorded_revocation_on_the_loop_thread_is_queued_at_once() -> None:
    async def main() -> None:
        broadcaster = Broadcaster()
        queue = broadcaster.subscribe()
        broadcaster.publish(early_revocation("execution", "ex_a"))
        assert queue.get_nowait()["target"] == "ex_a"  # no await: no loop iteration went by

    asyncio.run(main())


def test_a_recorded_message_waits_for_the_loop_and_keeps_its_order() -> None:
    async def main() -> None:
        broadcaster = Broadcaster()
        queue = broadcaster.subscribe()
        broadcaster.publish(recorded(1))
        broadcaster.publish(recorded(2))
        assert queue.empty()  # handed over by the loop, behind whatever it already holds
        await asyncio.sleep(0)
        assert [queue.get_nowait()["seq"], queue.get_nowait()["seq"]] == [1, 2]

    asyncio.run(main())


def test_from_another_thread_everything_goes_through_the_loop() -> None:
    async def main() -> None:
        broadcaster = Broadcaster()
        queue = broadcaster.subscribe()
        other = threading.Thread(target=broadcaster.publish, args=(early_revocation("execution", "ex_b"),))
        other.start()
        other.join()
        assert queue.empty()  # asyncio queues are not thread-safe: never put from another thread
        message = await asyncio.wait_for(queue.get(), 5)
        assert message["target"] == "ex_b"

    asyncio.run(main())


def test_a_stream_misses_no_recorded_message_when_an_early_one_overtakes_it() -> None:
    # A recorded change published from the log writer's thread is still on its way through
    # the loop when an unrecorded revocation, published on the loop, overtakes it: the
    # stream sends both (the early one carries seq -1, which moves no "last seen").
    async def main() -> list[bytes]:
        broadcaster = Broadcaster()
        frames = sse_stream(broadcaster, lambda since: [], since=0, keepalive=5.0)
        got = [await frames.__anext__()]  # ": live": subscribed, the backlog is sent
        writer = threading.Thread(target=broadcaster.publish, args=(recorded(7),))
        writer.start()
        writer.join()
        broadcaster.publish(early_revocation("execution", "ex_c"))
        got.append(await asyncio.wait_for(frames.__anext__(), 5))
        got.append(await asyncio.wait_for(frames.__anext__(), 5))
        await frames.aclose()
        return got

    live, *sent = asyncio.run(main())
    assert live == b": live\n\n"
    assert sorted(frame.split(b"\n", 1)[0] for frame in sent) == [b"id: -1", b"id: 7"]


def test_a_stream_sends_a_keepalive_when_idle_and_ends_when_told() -> None:
    async def main() -> list[bytes]:
        alive = [True]
        broadcaster = Broadcaster()
        frames = sse_stream(broadcaster, lambda since: [], since=0, keepalive=0.05, alive=lambda: alive[0])
        got = [await frames.__anext__(), await asyncio.wait_for(frames.__anext__(), 5)]
        alive[0] = False
        try:
            await asyncio.wait_for(frames.__anext__(), 5)
        except StopAsyncIteration:
            got.append(b"<ended>")
        return got

    assert asyncio.run(main()) == [b": live\n\n", b": keepalive\n\n", b"<ended>"]


def test_a_subscriber_that_names_an_execution_gets_no_other_executions_revocation() -> None:
    # With 50 executions running, the revoked one's stream would otherwise be woken last,
    # after 49 others each dropped the message (ADR 0021, decision 3).
    async def main() -> tuple[list[str], list[Any]]:
        broadcaster = Broadcaster()
        mine = broadcaster.subscribe("ex_mine")
        everything = broadcaster.subscribe()
        broadcaster.publish(early_revocation("execution", "ex_other"))
        broadcaster.publish(early_revocation("execution", "ex_mine"))
        broadcaster.publish(early_revocation("warrant", "wr_x"))  # may concern it indirectly
        broadcaster.publish({"type": "policy", "seq": 3, "bundle": "sha256:" + "0" * 64})
        await asyncio.sleep(0)
        got = [f"{m['type']}:{m.get('target', '')}" for m in drain(mine)]
        return got, [m.get("target") for m in drain(everything)]

    got, everything = asyncio.run(main())
    assert got == ["revocation:ex_mine", "revocation:wr_x", "policy:"]
    assert everything == ["ex_other", "ex_mine", "wr_x", None]


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
