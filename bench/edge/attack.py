#!/usr/bin/env python3
"""Edge attacks on the gateway's public port, measuring its memory (for bench/edge-attack.sh).

Three attacks, none carrying a token, against HOST:PORT (loopback):

  A  pre-auth bodies  h2c (prior knowledge) connections, each starting streams that POST a
                      REST route or call a gRPC method and send a large body as fast as the
                      gateway's flow-control windows allow, never END_STREAM; held, then closed.
  B  slow and idle    TCP connections that send nothing, plus connections that send an
                      HTTP/1.1 request's headers one line at a time; held, then closed.
  Z  zero window      h2c connections announcing SETTINGS_INITIAL_WINDOW_SIZE 0 that request
                      /openapi.json on as many streams as the gateway lets them open; held.

`attack.py run A|B|Z --pid PID --port PORT --row FILE` runs one attack against the gateway
process PID and prints its VmRSS (/proc/PID/status) before, its peak while the attack ran (read
every --sample-ms on a thread) and --after seconds after the attack closed, what the gateway did
with the attack's streams and connections, and whether it still answers /healthz; it saves its
row of the summary in FILE. `attack.py table FILE...` prints the summary of saved rows.
Needs the h2 package (python3 -m pip install h2).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import random
import resource
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.events
import h2.settings

REST_PATH = "/v1/wallet:deposit"
GRPC_PATH = "/safra.wallet.v1.WalletService/Deposit"
DOC_PATH = "/openapi.json"
# A connection whose bodies made no progress for this long counts as pushed (the gateway
# stopped granting window).
STALL_S = 2.0
# The longest A waits for its bodies to be pushed before holding anyway.
PUSH_CAP_S = 60.0
MIB = 1024 * 1024
Attack = Callable[[argparse.Namespace], Awaitable[tuple[list[str], str]]]


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"attack.py: {message}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int | None:
    """The resident memory of process `pid` in KiB, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def code_name(code: int) -> str:
    """An HTTP/2 error code's name (h2 gives known codes as ErrorCodes members)."""
    return getattr(code, "name", str(code))


def mib(kib: int | None) -> str:
    """KiB as MiB with one decimal, or `gone` for a process that has exited."""
    return "gone" if kib is None else f"{kib / 1024:.1f}"


class RssSampler:
    """Reads a process's VmRSS every `interval` seconds on a thread and keeps the peak."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self._peak: int | None = None
        self._peak_at = 0.0
        self._samples = 0
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Starts sampling."""
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> tuple[int | None, float, int]:
        """Stops sampling; the peak (KiB), seconds after the start it was seen, the samples."""
        self._stop.set()
        self._thread.join()
        return self._peak, self._peak_at - self._started, self._samples

    def _run(self) -> None:
        """The sampling loop."""
        while not self._stop.wait(self.interval):
            value = rss_kib(self.pid)
            self._samples += 1
            if value is not None and (self._peak is None or value > self._peak):
                self._peak, self._peak_at = value, time.monotonic()


@dataclasses.dataclass
class Stream:
    """One attack stream and what the gateway did with it."""

    kind: str
    body: bytes | memoryview = b""
    sent: int = 0
    status: str | None = None
    grpc_status: str | None = None
    reset: str | None = None
    received: int = 0

    def open(self) -> bool:
        """Whether the gateway has neither answered nor reset the stream."""
        return self.status is None and self.reset is None

    def outcome(self) -> str:
        """The stream's fate in a few words."""
        if self.status is not None:
            grpc = f" grpc-status {self.grpc_status}" if self.grpc_status is not None else ""
            return f"answered {self.status}{grpc}"
        if self.reset is not None:
            return f"reset {self.reset}"
        if self.body and self.sent == len(self.body):
            return "accepted (whole body taken, no answer)"
        if self.body:
            return "accepted (part of the body taken, window withheld)"
        return "no answer"


class H2Client:
    """A client h2c connection (prior knowledge) driven by hand, so no request ever ends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: h2.connection.H2Connection) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.streams: dict[int, Stream] = {}
        self.closed_by_gateway: str | None = None

    @classmethod
    async def open(cls, host: str, port: int, settings: dict[int, int] | None = None,
                   timeout: float = 5.0) -> H2Client:
        """Connects, sends the preface with `settings`, and waits for the gateway's SETTINGS."""
        reader, writer = await asyncio.open_connection(host, port)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        if settings:
            conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        conn.initiate_connection()
        client = cls(reader, writer, conn)
        await client.flush()
        deadline = time.monotonic() + timeout
        while not any(isinstance(event, h2.events.RemoteSettingsChanged)
                      for event in await client.receive(deadline - time.monotonic())):
            if client.closed_by_gateway or time.monotonic() > deadline:
                writer.close()
                raise ConnectionError("no SETTINGS from the gateway")
        return client

    def start(self, headers: list[tuple[str, str]], stream: Stream, end: bool) -> None:
        """Opens a stream with `headers`, ending it at once when `end`."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.streams[stream_id] = stream

    def max_streams(self) -> int:
        """How many streams the gateway lets this connection have open at once."""
        return self.conn.remote_settings.max_concurrent_streams

    def push(self) -> int:
        """Queues as much of every open stream's body as the windows allow; the bytes queued."""
        queued = 0
        for stream_id, stream in self.streams.items():
            while stream.open() and stream.sent < len(stream.body):
                size = min(self.conn.local_flow_control_window(stream_id),
                           self.conn.max_outbound_frame_size, len(stream.body) - stream.sent)
                if size <= 0:
                    break
                self.conn.send_data(stream_id, stream.body[stream.sent:stream.sent + size])
                stream.sent += size
                queued += size
        return queued

    def pushed(self) -> bool:
        """Whether every open stream's body has been sent whole."""
        return all(not s.open() or s.sent == len(s.body) for s in self.streams.values())

    async def flush(self) -> None:
        """Writes what the h2 state machine has queued."""
        data = self.conn.data_to_send()
        if data and not self.closed_by_gateway:
            self.writer.write(data)
            try:
                await asyncio.wait_for(self.writer.drain(), 1.0)
            except TimeoutError:
                pass  # the kernel's buffers are full; the transport keeps the rest
            except OSError as error:
                self.closed_by_gateway = type(error).__name__

    async def receive(self, timeout: float) -> list[h2.events.Event]:
        """Reads for up to `timeout` seconds and applies what arrived to the streams."""
        if self.closed_by_gateway:
            await asyncio.sleep(max(timeout, 0))
            return []
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 16), max(timeout, 0))
        except TimeoutError:
            return []
        except OSError as error:
            self.closed_by_gateway = type(error).__name__
            return []
        if not data:
            self.closed_by_gateway = "EOF"
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._apply(event)
        await self.flush()
        return events

    def _apply(self, event: h2.events.Event) -> None:
        """Records one event on its stream or on the connection."""
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ConnectionTerminated):
            self.closed_by_gateway = f"GOAWAY {code_name(event.error_code)}"
        elif stream is None:
            return
        elif isinstance(event, h2.events.ResponseReceived):
            headers = dict(event.headers)
            stream.status = headers.get(":status", "?")
            stream.grpc_status = headers.get("grpc-status")
        elif isinstance(event, h2.events.TrailersReceived):
            stream.grpc_status = dict(event.headers).get("grpc-status", stream.grpc_status)
        elif isinstance(event, h2.events.DataReceived):
            stream.received += len(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = code_name(event.error_code)

    def close(self) -> None:
        """Closes the TCP connection without a GOAWAY, as an attacker would."""
        self.writer.close()


async def hold(clients: list[H2Client], seconds: float) -> None:
    """Keeps reading on every connection for `seconds` (answers, resets, PINGs)."""
    deadline = time.monotonic() + seconds

    async def keep(client: H2Client) -> None:
        while (left := deadline - time.monotonic()) > 0:
            await client.receive(min(left, 0.5))

    await asyncio.gather(*(keep(client) for client in clients))


def tally(streams: list[Stream]) -> tuple[collections.Counter, int]:
    """Counts streams by kind and outcome; also the body bytes the gateway took."""
    outcomes = collections.Counter((s.kind, s.outcome()) for s in streams)
    return outcomes, sum(s.sent for s in streams)


def describe(outcomes: collections.Counter) -> list[str]:
    """`count kind outcome` lines, most common first."""
    return [f"{count:6d} {kind:5s} {outcome}" for (kind, outcome), count in outcomes.most_common()]


def grpc_frame_body(size: int) -> bytes:
    """A gRPC message frame announcing `size - 5` bytes of payload, all present."""
    return struct.pack(">BI", 0, size - 5) + bytes(size - 5)


def json_body(size: int) -> bytes:
    """`size` bytes of a JSON object that is never closed."""
    head = b'{"amount":{"currencyCode":"BRL","units":"1"},"memo":"'
    return head + b"x" * (size - len(head))


async def attack_bodies(args: argparse.Namespace) -> tuple[list[str], str]:
    """Attack A: large unauthenticated bodies on REST and gRPC streams, never ended."""
    bodies = {"rest": memoryview(json_body(args.a_body_bytes)),
              "grpc": memoryview(grpc_frame_body(args.a_body_bytes))}
    authority = f"{args.host}:{args.port}"
    headers = {
        "rest": [(":method", "POST"), (":scheme", "http"), (":authority", authority),
                 (":path", REST_PATH), ("content-type", "application/json"),
                 ("content-length", str(args.a_body_bytes))],
        "grpc": [(":method", "POST"), (":scheme", "http"), (":authority", authority),
                 (":path", GRPC_PATH), ("content-type", "application/grpc"), ("te", "trailers")],
    }
    clients = [await H2Client.open(args.host, args.port) for _ in range(args.a_conns)]
    kinds = itertools.cycle(["rest", "grpc"])
    for index in range(args.a_bodies):
        kind = next(kinds)
        clients[index % len(clients)].start(headers[kind], Stream(kind, bodies[kind]), end=False)
    log(f"A: {args.a_bodies} streams on {len(clients)} connections, "
        f"{args.a_body_bytes} bytes of body each")

    async def push(client: H2Client) -> None:
        """Sends bodies until all are taken or the gateway stops granting window."""
        last_progress = time.monotonic()
        while not client.closed_by_gateway and not client.pushed():
            if client.push():
                last_progress = time.monotonic()
            await client.flush()
            if time.monotonic() - last_progress > STALL_S:
                return
            await client.receive(0.05)

    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(push(c) for c in clients)), PUSH_CAP_S)
    except TimeoutError:
        log(f"A: bodies still being pushed after {PUSH_CAP_S:.0f} s; holding anyway")
    log(f"A: pushed in {time.monotonic() - started:.1f} s; holding {args.a_hold} s")
    await hold(clients, args.a_hold)
    for client in clients:
        client.close()
    streams = [s for c in clients for s in c.streams.values()]
    outcomes, taken = tally(streams)
    accepted = sum(n for (_, outcome), n in outcomes.items() if outcome.startswith("accepted"))
    answered = sum(n for (_, outcome), n in outcomes.items() if outcome.startswith("answered"))
    reset = sum(n for (_, outcome), n in outcomes.items() if outcome.startswith("reset"))
    closed = sum(1 for c in clients if c.closed_by_gateway)
    lines = [f"streams: {len(streams)} on {len(clients)} connections; "
             f"body bytes the gateway took: {taken / MIB:.1f} MiB",
             *describe(outcomes),
             f"connections the gateway closed: {closed} of {len(clients)}"
             + "".join(f"; {c.closed_by_gateway}" for c in clients if c.closed_by_gateway)]
    note = (f"{len(streams)} streams: {accepted} accepted, {answered} answered, {reset} reset; "
            f"{taken / MIB:.0f} MiB of body taken")
    return lines, note


async def watch_idle(reader: asyncio.StreamReader, deadline: float) -> str | None:
    """Waits on a silent connection until `deadline`; how the gateway ended it, if it did."""
    try:
        data = await asyncio.wait_for(reader.read(4096), max(deadline - time.monotonic(), 0))
    except TimeoutError:
        return None
    except OSError as error:
        return type(error).__name__
    return "EOF" if not data else "answered"


async def drip_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       host: str, every: float, deadline: float) -> str | None:
    """Sends a request's header lines one every `every` seconds until `deadline`, never the
    blank line; how the gateway ended the connection, if it did."""
    lines = itertools.chain([b"GET /openapi.json HTTP/1.1\r\n", f"Host: {host}\r\n".encode()],
                            (f"X-Slow-{n}: {'x' * 32}\r\n".encode() for n in itertools.count()))
    wait = random.uniform(0, every)  # spread the connections' lines over the interval
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(4096), min(wait, left))
        except TimeoutError:
            try:
                writer.write(next(lines))
                await writer.drain()
            except OSError as error:
                return type(error).__name__
            wait = every
            continue
        except OSError as error:
            return type(error).__name__
        return "EOF" if not data else "answered"
    return None


async def attack_connections(args: argparse.Namespace) -> tuple[list[str], str]:
    """Attack B: silent TCP connections and slow HTTP/1.1 headers."""
    gate = asyncio.Semaphore(200)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """One TCP connection, or None when the gateway's port would not take it in 10 s."""
        async with gate:
            try:
                return await asyncio.wait_for(asyncio.open_connection(args.host, args.port), 10)
            except (OSError, TimeoutError):
                return None

    started = time.monotonic()
    idle = await asyncio.gather(*(connect() for _ in range(args.b_idle)))
    slow = await asyncio.gather(*(connect() for _ in range(args.b_slow)))
    idle_ok = [c for c in idle if c]
    slow_ok = [c for c in slow if c]
    log(f"B: {len(idle_ok)} idle and {len(slow_ok)} slow connections open in "
        f"{time.monotonic() - started:.1f} s; holding {args.b_hold} s")
    deadline = time.monotonic() + args.b_hold
    ends = await asyncio.gather(
        *(watch_idle(reader, deadline) for reader, _ in idle_ok),
        *(drip_headers(reader, writer, f"{args.host}:{args.port}", args.b_slow_every, deadline)
          for reader, writer in slow_ok))
    for _, writer in idle_ok + slow_ok:
        writer.close()
    idle_ends = collections.Counter(e for e in ends[:len(idle_ok)] if e)
    slow_ends = collections.Counter(e for e in ends[len(idle_ok):] if e)

    def ended(counter: collections.Counter) -> str:
        """`n (how: n, ...)` for the connections the gateway ended."""
        detail = ", ".join(f"{how}: {n}" for how, n in counter.most_common())
        return f"{sum(counter.values())}" + (f" ({detail})" if detail else "")

    lines = [f"idle connections: {len(idle_ok)} of {args.b_idle} opened, "
             f"closed by the gateway during the hold: {ended(idle_ends)}",
             f"slow-header connections: {len(slow_ok)} of {args.b_slow} opened (a line every "
             f"{args.b_slow_every} s), closed or answered by the gateway: {ended(slow_ends)}"]
    note = (f"gateway closed {sum(idle_ends.values())}/{len(idle_ok)} idle, "
            f"{sum(slow_ends.values())}/{len(slow_ok)} slow in {args.b_hold} s")
    return lines, note


async def attack_zero_window(args: argparse.Namespace) -> tuple[list[str], str]:
    """Attack Z: /openapi.json requested on streams whose window is zero, never read."""
    settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0,
                h2.settings.SettingCodes.ENABLE_PUSH: 0}
    headers = [(":method", "GET"), (":scheme", "http"), (":authority", f"{args.host}:{args.port}"),
               (":path", DOC_PATH)]
    clients: list[H2Client] = []
    left = args.z_streams
    while left > 0:
        client = await H2Client.open(args.host, args.port, settings)
        count = min(left, client.max_streams())
        for _ in range(count):
            client.start(headers, Stream("doc"), end=True)
        await client.flush()
        clients.append(client)
        left -= count
    log(f"Z: {args.z_streams} streams on {len(clients)} connections "
        f"(the gateway allows {clients[0].max_streams()} per connection); holding {args.z_hold} s")
    await hold(clients, args.z_hold)
    for client in clients:
        client.close()
    streams = [s for c in clients for s in c.streams.values()]
    outcomes, _ = tally(streams)
    received = sum(s.received for s in streams)
    closed = sum(1 for c in clients if c.closed_by_gateway)
    lines = [f"streams: {len(streams)} on {len(clients)} connections "
             f"(max concurrent streams {clients[0].max_streams()}); "
             f"body bytes received: {received}",
             *describe(outcomes),
             f"connections the gateway closed: {closed} of {len(clients)}"]
    fates = ", ".join(f"{count} {outcome}" for (_, outcome), count in outcomes.most_common())
    note = (f"{len(streams)} streams on {len(clients)} conns: {fates} "
            f"({received} body bytes read); {closed} conns closed by the gateway")
    return lines, note


async def healthz(host: str, port: int) -> str:
    """The status line of GET /healthz over HTTP/1.1, or what went wrong (5 s at most)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Connection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.close()
    except (OSError, TimeoutError) as error:
        return f"healthz failed ({type(error).__name__})"
    parts = line.decode(errors="replace").split()
    return f"healthz {parts[1] if len(parts) > 1 else 'no answer'}"


ATTACKS: dict[str, tuple[str, Attack]] = {
    "A": ("A pre-auth bodies", attack_bodies),
    "B": ("B slow and idle connections", attack_connections),
    "Z": ("Z zero-window /openapi.json", attack_zero_window),
}


async def measure(args: argparse.Namespace) -> None:
    """Runs one attack, printing the gateway's memory before, at its peak during and after it,
    and saves its table row (JSON) in `args.row`."""
    name, attack = ATTACKS[args.attack]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = rss_kib(args.pid)
    if idle is None:
        raise SystemExit(f"attack.py: no process {args.pid}")
    log(f"{name}: gateway RSS idle {mib(idle)} MiB")
    sampler = RssSampler(args.pid, args.sample_ms / 1000)
    sampler.start()
    started = time.monotonic()
    lines, note = await attack(args)
    peak, peak_at, samples = sampler.stop()
    duration = time.monotonic() - started
    log(f"{name}: closed after {duration:.1f} s; waiting {args.after} s")
    await asyncio.sleep(args.after)
    after = rss_kib(args.pid)
    health = await healthz(args.host, args.port)
    print(f"### {name}")
    print(f"gateway RSS: idle {mib(idle)} MiB, peak {mib(peak)} MiB "
          f"({peak_at:.1f} s into the {duration:.1f} s attack, {samples} samples), "
          f"{args.after} s after {mib(after)} MiB; then {health}")
    for line in lines:
        print(f"  {line}")
    print(flush=True)
    with open(args.row, "w") as row:
        json.dump({"name": name, "idle": idle, "peak": peak, "after": after,
                   "note": f"{note}; {health}"}, row)


def table(paths: list[str], after: int) -> None:
    """The summary table (Markdown) of the rows saved in `paths`."""
    print(f"| attack | idle MiB | peak MiB | peak-idle MiB | {after} s after MiB | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for path in paths:
        with open(path) as file:
            row = json.load(file)
        idle, peak = row["idle"], row["peak"]
        delta = "-" if peak is None or idle is None else mib(peak - idle)
        print(f"| {row['name']} | {mib(idle)} | {mib(peak)} | {delta} | "
              f"{mib(row['after'])} | {row['note']} |")


def arguments() -> argparse.Namespace:
    """The command line: `run` one attack, or print the `table` of saved rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one attack against a gateway")
    run.add_argument("attack", choices=sorted(ATTACKS))
    run.add_argument("--pid", type=int, required=True, help="the gateway's process id")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True, help="the gateway's public port")
    run.add_argument("--row", required=True, help="where to save the table row (JSON)")
    run.add_argument("--a-bodies", type=int, default=100)
    run.add_argument("--a-conns", type=int, default=4)
    run.add_argument("--a-body-bytes", type=int, default=4_000_000)
    run.add_argument("--a-hold", type=float, default=10)
    run.add_argument("--b-idle", type=int, default=1000)
    run.add_argument("--b-slow", type=int, default=100)
    run.add_argument("--b-slow-every", type=float, default=3)
    run.add_argument("--b-hold", type=float, default=15)
    run.add_argument("--z-streams", type=int, default=3800)
    run.add_argument("--z-hold", type=float, default=10)
    run.add_argument("--sample-ms", type=int, default=150)
    summary = commands.add_parser("table", help="the summary of saved rows")
    summary.add_argument("rows", nargs="+", help="rows saved by run")
    for command in (run, summary):
        command.add_argument("--after", type=int, default=30,
                             help="seconds after the attack of the last reading")
    args = parser.parse_args()
    if args.command == "run" and (
            args.a_body_bytes < 64 or min(args.a_bodies, args.a_conns, args.z_streams) < 1):
        parser.error("need --a-body-bytes >= 64 and at least one body, connection and stream")
    return args


def main() -> None:
    """Runs the command."""
    args = arguments()
    if args.command == "run":
        asyncio.run(measure(args))
    else:
        table(args.rows, args.after)


if __name__ == "__main__":
    main()
