"""A fake Android device daemon (adbd) on 127.0.0.1 that the REAL adb server connects to.

`adb connect 127.0.0.1:PORT` makes the server speak the ADB device transport to it:
24-byte message headers (CNXN, OPEN, OKAY, WRTE, CLSE) multiplexing streams. Implemented
services: `shell:` (a small toolbox: getprop, pm, am, sha256sum, rm, ls, cat, echo),
`sync:` v1 (STAT, LIST, RECV, SEND/DATA/DONE, QUIT) over a temporary folder that plays the
phone's file system, and `tcp:PORT` streams (what `adb forward` opens) relayed to host
sockets that play the phone's loopback network. Only what is implemented is advertised
(no shell_v2, stat_v2, ls_v2, sendrecv_v2).

Rules the real server needs (DEVICE-FACTS.md): answer CNXN with CNXN (no AUTH); one WRTE
in flight per stream until its OKAY; OKAY every WRTE received; payloads capped;
TCP_NODELAY. `PrivateAdbServer` runs Debian's `adb` on a private port with a temporary HOME.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import queue
import shlex
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from dfdcap.errors import DeviceError

A_CNXN = 0x4E584E43
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_AUTH = 0x48545541
A_VERSION = 0x01000001
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024
_HEADER = struct.Struct("<6I")
_NAMES = {A_CNXN: "CNXN", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE", A_AUTH: "AUTH"}


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


class _Stream:
    """One ADB stream on a transport: an inbox of received bytes, and OKAY-paced writes."""

    def __init__(self, transport: "_Transport", local_id: int, remote_id: int):
        self.t = transport
        self.local_id = local_id
        self.remote_id = remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self._okay = threading.Event()
        self.closed = False
        self._buf = b""

    # writing ---------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send data as WRTE packets, one at a time, each waiting for the server's OKAY."""
        view = memoryview(data)
        cap = self.t.max_payload
        for off in range(0, len(view), cap):
            if self.closed:
                raise ConnectionResetError("stream closed by the server")
            self._okay.clear()
            self.t.send(A_WRTE, self.local_id, self.remote_id, bytes(view[off:off + cap]))
            while not self._okay.wait(0.5):
                if self.closed or self.t.dead:
                    break
            if self.closed:
                raise ConnectionResetError("stream closed while waiting for OKAY")

    def close(self) -> None:
        was_closed, self.closed = self.closed, True
        self.t.forget(self.local_id)
        self.inbox.put(None)
        self._okay.set()
        if not was_closed:
            self.t.send(A_CLSE, self.local_id, self.remote_id, b"")

    # events from the transport -----------------------------------------------------------------
    def on_okay(self) -> None:
        self._okay.set()

    def on_close(self) -> None:
        self.closed = True
        self.inbox.put(None)
        self._okay.set()

    # reading ---------------------------------------------------------------------------------
    def read_some(self) -> bytes | None:
        if self._buf:
            b, self._buf = self._buf, b""
            return b
        return self.inbox.get()

    def read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = self.inbox.get()
            if chunk is None:
                self.inbox.put(None)
                return None
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


class _Transport:
    """One connection from the adb server: reads messages, dispatches streams to services."""

    def __init__(self, daemon: "FakeAdbd", sock: socket.socket):
        self.d = daemon
        self.sock = sock
        self.max_payload = MAX_PAYLOAD
        self.dead = False
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    def send(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if self.dead:
            raise ConnectionResetError("transport closed")
        header = _HEADER.pack(cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF)
        try:
            with self._send_lock:
                self.sock.sendall(header + data)
        except OSError as e:
            self.kill()
            raise ConnectionResetError(str(e)) from None

    def forget(self, local_id: int) -> None:
        with self._lock:
            self._streams.pop(local_id, None)

    def kill(self) -> None:
        """Drop the connection (a pulled cable): every stream ends."""
        self.dead = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            s.on_close()

    def run(self) -> None:
        try:
            while not self.dead:
                header = _recv_exact(self.sock, _HEADER.size)
                if header is None:
                    break
                cmd, arg0, arg1, length, _check, magic = _HEADER.unpack(header)
                if magic != cmd ^ 0xFFFFFFFF:
                    break
                data = _recv_exact(self.sock, length) if length else b""
                if data is None:
                    break
                self._dispatch(cmd, arg0, arg1, data)
        except OSError:
            pass
        finally:
            self.kill()
            self.d._transport_ended(self)

    def _dispatch(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == A_CNXN:
            self.max_payload = max(4096, min(MAX_PAYLOAD, arg1))
            if not self.d.authorized:  # ask for a key the phone never accepts: the server says "unauthorized"
                self.send(A_AUTH, 1, 0, os.urandom(20))
                return
            self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, self.d.banner().encode())
        elif cmd == A_AUTH:
            if arg0 == 2:  # a signature: refused, ask again (arg0 3, a public key: the user never taps)
                self.send(A_AUTH, 1, 0, os.urandom(20))
        elif cmd == A_OPEN:
            service = data.rstrip(b"\x00").decode("utf-8", "replace")
            with self._lock:
                local_id = self._next_id
                self._next_id += 1
                stream = _Stream(self, local_id, arg0)
                self._streams[local_id] = stream
            handler = self.d._service(service)
            if handler is None:
                self.forget(local_id)
                self.send(A_CLSE, 0, arg0, b"")
                return
            self.d.opened.append(service)
            self.send(A_OKAY, local_id, arg0, b"")
            threading.Thread(target=self._serve, args=(handler, stream), daemon=True, name=f"adbd-{service[:20]}").start()
        elif cmd in (A_OKAY, A_WRTE, A_CLSE):
            with self._lock:
                stream = self._streams.get(arg1)
            if stream is None:
                if cmd == A_WRTE:  # unknown stream: tell the server it is gone
                    self.send(A_CLSE, 0, arg0, b"")
                return
            if cmd == A_OKAY:
                stream.on_okay()
            elif cmd == A_WRTE:
                stream.inbox.put(data)
                self.send(A_OKAY, stream.local_id, stream.remote_id, b"")
            else:
                self.forget(stream.local_id)
                stream.on_close()

    def _serve(self, handler: Callable[[_Stream], None], stream: _Stream) -> None:
        try:
            handler(stream)
        except (ConnectionResetError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionResetError, OSError):
                stream.close()


def close_listener(listener: socket.socket | None) -> None:
    """Stop a listening socket so that a thread blocked in accept() wakes up."""
    if listener is not None:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()


class FakeAdbd:
    """A simulated phone's adbd: a file system (a host folder), a shell toolbox, a loopback network.

    root_dir plays the phone's `/`; `network` maps phone TCP ports to host ports on 127.0.0.1
    (an app "listening" on the phone); `packages` maps installed package names to a launcher
    called by `am start -n <package>/<activity>`. `drop_after_recv=N` pulls the cable after the
    N-th sync RECV finished (to test resumed pulls). `commands` adds shell commands (name ->
    f(args) -> (output, status)), e.g. a simulated app's `input`, `date`, `cmd`. authorized=False
    plays a phone whose USB debugging prompt was never accepted (adb lists it "unauthorized").
    """

    def __init__(
        self,
        root_dir: str | os.PathLike,
        *,
        model: str = "SimPhone",
        product: str = "dfdcap_sim",
        device: str = "sim",
        network: dict[int, int] | None = None,
        packages: dict[str, Callable[[], None] | None] | None = None,
        drop_after_recv: int | None = None,
        commands: dict[str, Callable[[list[str]], tuple[bytes, int]]] | None = None,
        authorized: bool = True,
    ):
        self.commands = dict(commands or {})
        self.authorized = authorized
        self.root = Path(root_dir).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.props = {
            "ro.product.model": model, "ro.product.name": product, "ro.product.device": device,
            "ro.build.version.release": "14", "ro.build.version.sdk": "34",
            "ro.serialno": f"SIM{os.getpid()}",
        }
        self.network = dict(network or {})
        self.packages = dict(packages or {})
        self.drop_after_recv = drop_after_recv
        self.recv_count = 0
        self.recv_paths: list[str] = []
        self.opened: list[str] = []
        self.port: int | None = None
        self._listener: socket.socket | None = None
        self._transports: list[_Transport] = []
        self._lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------------
    def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:port (0 = any free port, read back); returns the port."""
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(4)
        self._listener = ls
        self.port = ls.getsockname()[1]
        if 5555 <= self.port <= 5585:  # the server probes these as emulators: take another
            ls.close()
            return self.start(0)
        self._accept_thread = threading.Thread(target=self._accept, args=(ls,), daemon=True, name="adbd-accept")
        self._accept_thread.start()
        return self.port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                sock, _ = ls.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = _Transport(self, sock)
            with self._lock:
                self._transports.append(t)
            threading.Thread(target=t.run, daemon=True, name="adbd-transport").start()

    def _transport_ended(self, t: _Transport) -> None:
        with self._lock:
            if t in self._transports:
                self._transports.remove(t)

    def disconnect(self) -> None:
        """Pull the cable: stop listening and drop every connection. `start(self.port)` plugs it back."""
        close_listener(self._listener)
        self._listener = None
        with self._lock:
            transports = list(self._transports)
        for t in transports:
            t.kill()
        if self._accept_thread is not None:
            self._accept_thread.join(2.0)

    close = disconnect

    def __enter__(self) -> "FakeAdbd":
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def banner(self) -> str:
        p = self.props
        return (f"device::ro.product.name={p['ro.product.name']};ro.product.model={p['ro.product.model']};"
                f"ro.product.device={p['ro.product.device']};features=fixed_push_mkdir")

    # services ---------------------------------------------------------------------------------
    def _service(self, service: str) -> Callable[[_Stream], None] | None:
        if service.startswith("shell:"):
            cmd = service[len("shell:"):]
            return lambda s: self._shell(cmd, s)
        if service == "sync:":
            return self._sync
        if service.startswith("tcp:"):
            try:
                port = int(service[4:].split(":")[0])
            except ValueError:
                return None
            if port not in self.network:
                return None  # nothing listens there: the server sees the open refused
            return lambda s: self._tcp(self.network[port], s)
        return None

    def device_path(self, path: str) -> Path:
        """A phone path inside root_dir; refuses anything that would leave it."""
        if not path.startswith("/"):
            path = "/" + path
        p = (self.root / posixpath.normpath(path).lstrip("/")).resolve()
        if p != self.root and self.root not in p.parents:
            raise PermissionError(f"{path}: Permission denied")
        return p

    # shell ------------------------------------------------------------------------------------
    def _shell(self, cmdline: str, stream: _Stream) -> None:
        out = self.run_shell(cmdline)
        if out:
            stream.write(out)

    def run_shell(self, cmdline: str) -> bytes:
        """Run a command line of the toolbox: words as POSIX sh splits them, `;` between commands."""
        try:
            lex = shlex.shlex(cmdline, posix=True, punctuation_chars=";")
            lex.whitespace_split = True
            words = list(lex)
        except ValueError as e:
            return f"/system/bin/sh: syntax error: {e}\n".encode()
        out = bytearray()
        status = 0
        cmd: list[str] = []
        for w in words + [";"]:
            if w != ";":
                cmd.append(w.replace("$?", str(status)))
                continue
            if cmd:
                text, status = self._run_one(cmd)
                out += text
            cmd = []
        return bytes(out)

    def _run_one(self, argv: list[str]) -> tuple[bytes, int]:
        name, args = argv[0], argv[1:]
        try:
            if name in self.commands:
                return self.commands[name](args)
            if name == "echo":
                return (" ".join(args) + "\n").encode(), 0
            if name == "true":
                return b"", 0
            if name == "getprop":
                if args:
                    return (self.props.get(args[0], "") + "\n").encode(), 0
                return "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items())).encode(), 0
            if name == "pm" and args[:2] == ["list", "packages"]:
                filt = args[2] if len(args) > 2 else ""
                return "".join(f"package:{p}\n" for p in sorted(self.packages) if filt in p).encode(), 0
            if name == "am" and args[:1] == ["start"] and "-n" in args:
                comp = args[args.index("-n") + 1] if args.index("-n") + 1 < len(args) else ""
                pkg = comp.split("/")[0]
                if pkg not in self.packages:
                    return f"Error: Activity class {{{comp}}} does not exist.\n".encode(), 1
                launch = self.packages[pkg]
                if launch is not None:
                    launch()
                return f"Starting: Intent {{ cmp={comp} }}\n".encode(), 0
            if name == "sha256sum":
                out, rc = bytearray(), 0
                for a in args:
                    p = self.device_path(a)
                    if not p.is_file():
                        out += f"sha256sum: {a}: No such file or directory\n".encode()
                        rc = 1
                        continue
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                    out += f"{h.hexdigest()}  {a}\n".encode()
                return bytes(out), rc
            if name == "rm":
                flags = {a for a in args if a.startswith("-")}
                recursive = any("r" in f or "R" in f for f in flags)
                force = any("f" in f for f in flags)
                out, rc = bytearray(), 0
                for a in (a for a in args if not a.startswith("-")):
                    p = self.device_path(a)
                    if p.is_dir() and recursive:
                        shutil.rmtree(p)
                    elif p.is_dir():
                        out += f"rm: {a}: is a directory\n".encode()
                        rc = 1
                    elif p.exists():
                        p.unlink()
                    elif not force:
                        out += f"rm: {a}: No such file or directory\n".encode()
                        rc = 1
                return bytes(out), rc
            if name == "ls":
                targets = [a for a in args if not a.startswith("-")] or ["/"]
                out = bytearray()
                for a in targets:
                    p = self.device_path(a)
                    if p.is_dir():
                        out += "".join(f"{c.name}\n" for c in sorted(p.iterdir())).encode()
                    elif p.exists():
                        out += f"{a}\n".encode()
                    else:
                        return f"ls: {a}: No such file or directory\n".encode(), 1
                return bytes(out), 0
            if name == "cat":
                out = bytearray()
                for a in args:
                    out += self.device_path(a).read_bytes()
                return bytes(out), 0
        except (OSError, PermissionError) as e:
            return f"{name}: {e}\n".encode(), 1
        return f"/system/bin/sh: {name}: inaccessible or not found\n".encode(), 127

    # sync -------------------------------------------------------------------------------------
    def _sync(self, stream: _Stream) -> None:
        out = _SyncOut(stream)
        while True:
            head = stream.read_exact(8)
            if head is None:
                return
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"QUIT":
                out.flush()
                return
            if n > 4096:
                return
            arg = stream.read_exact(n) if n else b""
            if arg is None:
                return
            path = arg.decode("utf-8", "replace")
            if cmd == b"STAT":
                out.put(b"STAT" + self._stat(path))
                out.flush()
            elif cmd == b"LIST":
                self._list(path, out)
                out.flush()
            elif cmd == b"RECV":
                self.recv_paths.append(path)
                self.recv_count += 1
                drop = self.drop_after_recv is not None and self.recv_count >= self.drop_after_recv
                try:
                    self._recv(path, out)
                    out.flush()
                finally:
                    if drop:  # the cable is pulled right after this file went out
                        self.drop_after_recv = None
                        self.disconnect()
                if drop:
                    return
            elif cmd == b"SEND":
                if not self._send(path, stream, out):
                    return
                out.flush()
            else:
                out.put(b"FAIL" + _lp(f"unknown sync command {cmd!r}".encode()))
                out.flush()
                return

    def _stat(self, path: str) -> bytes:
        try:
            st = self.device_path(path).stat()
        except (OSError, PermissionError):
            return struct.pack("<III", 0, 0, 0)
        return struct.pack("<III", st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF, int(st.st_mtime))

    def _list(self, path: str, out: "_SyncOut") -> None:
        with contextlib.suppress(OSError, PermissionError):
            p = self.device_path(path)
            if p.is_dir():
                for c in [".", ".."] + sorted(x.name for x in p.iterdir()):
                    st = (p / c).stat() if c not in (".", "..") else p.stat()
                    name = c.encode()
                    out.put(b"DENT" + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(name)) + name)
        out.put(b"DONE" + bytes(16))

    def _recv(self, path: str, out: "_SyncOut") -> None:
        try:
            p = self.device_path(path)
            f = open(p, "rb")
        except (OSError, PermissionError) as e:
            msg = "No such file or directory" if isinstance(e, FileNotFoundError) else str(e)
            out.put(b"FAIL" + _lp(msg.encode()))
            return
        with f:
            for chunk in iter(lambda: f.read(SYNC_DATA_MAX), b""):
                out.put(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        out.put(b"DONE" + bytes(4))

    def _send(self, spec: str, stream: _Stream, out: "_SyncOut") -> bool:
        path, _, mode = spec.rpartition(",")
        data = bytearray()
        while True:
            head = stream.read_exact(8)
            if head is None:
                return False
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"DATA":
                chunk = stream.read_exact(n)
                if chunk is None:
                    return False
                data += chunk
            elif cmd == b"DONE":
                break
            else:
                out.put(b"FAIL" + _lp(b"bad SEND packet"))
                return True
        try:
            p = self.device_path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(bytes(data))
            if mode.isdigit():
                os.chmod(p, int(mode) & 0o777)
            out.put(b"OKAY" + bytes(4))
        except (OSError, PermissionError) as e:
            out.put(b"FAIL" + _lp(str(e).encode()))
        return True

    # tcp ---------------------------------------------------------------------------------------
    def _tcp(self, host_port: int, stream: _Stream) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", host_port), timeout=2.0)
        except OSError:
            return  # the app is not listening: close the stream
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)

        def to_app() -> None:
            try:
                while True:
                    data = stream.read_some()
                    if data is None:
                        break
                    sock.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=to_app, daemon=True, name="adbd-tcp-in")
        t.start()
        try:
            while True:
                data = sock.recv(stream.t.max_payload)
                if not data:
                    break
                stream.write(data)
        except OSError:
            pass
        finally:
            sock.close()


def _lp(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


class _SyncOut:
    """Collects sync replies and sends them as WRTE packets of at most the transport's payload."""

    def __init__(self, stream: _Stream):
        self.stream = stream
        self.buf = bytearray()

    def put(self, b: bytes) -> None:
        self.buf += b
        if len(self.buf) >= self.stream.t.max_payload:
            cap = self.stream.t.max_payload
            n = len(self.buf) // cap * cap
            self.stream.write(bytes(self.buf[:n]))
            del self.buf[:n]

    def flush(self) -> None:
        if self.buf:
            self.stream.write(bytes(self.buf))
            self.buf.clear()


# --- a private adb server ------------------------------------------------------------------------


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux: /proc; 32768-60999 elsewhere)."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside the emulator range 5555-5585 and outside the ephemeral range.

    `adb start-server` first connects to its port to see whether a server runs there. A port from the
    ephemeral range can then be picked as the connection's own source port, and TCP connects the
    socket to itself: adb reads back its own request and stops with "protocol fault (status 30 30 30
    63?!)" (seen once in three loaded test runs). Below the range that cannot happen."""
    import random

    lo, hi = _ephemeral_ports()
    bottom, top = (10000, lo) if lo > 11000 else (hi + 1, 65536)  # [bottom, top)
    rng = random.Random()
    for _ in range(1000 if top - bottom > 1000 else 0):
        port = rng.randrange(bottom, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    while True:  # no room outside the ephemeral range on this machine: any free port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 5555 <= port <= 5585:
            return port


class PrivateAdbServer:
    """Debian's `adb` server on a private port with a temporary HOME; `stop()` kills it.

    Use as a context manager. `adb_path` defaults to `adb` on PATH (Debian's starts in ~0.1 s).
    """

    def __init__(self, adb_path: str | None = None, port: int | None = None):
        self.adb = adb_path or shutil.which("adb")
        if not self.adb:
            raise DeviceError("adb: not found on PATH (install Debian's `adb` package)")
        self.port = port or free_port()
        self._home = tempfile.mkdtemp(prefix="dfdcap-adb-home-")
        self.env = {**os.environ, "HOME": self._home, "ANDROID_ADB_SERVER_PORT": str(self.port)}
        self.env.pop("ADB_VENDOR_KEYS", None)
        self.running = False

    def adb_cmd(self, *args: str, timeout: float = 20.0) -> str:
        r = subprocess.run([self.adb, "-P", str(self.port), *args], env=self.env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise DeviceError(f"adb -P {self.port} {' '.join(args)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}")
        return r.stdout + r.stderr

    def start(self) -> "PrivateAdbServer":
        self.adb_cmd("start-server")
        self.running = True
        return self

    def devices(self) -> dict[str, str]:
        """serial -> state, straight from the server's host protocol."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            req = b"host:devices"
            s.sendall(b"%04x" % len(req) + req)
            if _recv_exact(s, 4) != b"OKAY":
                raise DeviceError(f"adb server on port {self.port}: host:devices refused")
            n = int(_recv_exact(s, 4), 16)
            body = (_recv_exact(s, n) or b"").decode() if n else ""
        return dict(line.split("\t", 1) for line in body.splitlines() if "\t" in line)

    def connect(self, serial: str, timeout_s: float = 10.0) -> str:
        """`adb connect serial`, then wait until the server says the state is `device`."""
        deadline = time.monotonic() + timeout_s
        if self.devices().get(serial) == "offline":  # a dropped TCP device: the server retries slowly
            self.adb_cmd("disconnect", serial)
        while True:
            self.adb_cmd("connect", serial)
            t_state = time.monotonic() + 2.0
            while time.monotonic() < min(t_state, deadline):
                if self.devices().get(serial) == "device":
                    return serial
                time.sleep(0.01)
            if time.monotonic() >= deadline:
                raise DeviceError(f"{serial}: did not reach state 'device' in {timeout_s} s (state {self.devices().get(serial)!r})")
            with contextlib.suppress(DeviceError):
                self.adb_cmd("disconnect", serial)

    def wait_gone(self, serial: str, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.devices().get(serial) == "device":
            if time.monotonic() > deadline:
                raise DeviceError(f"{serial}: still listed as 'device' after {timeout_s} s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.running:
            with contextlib.suppress(DeviceError, subprocess.TimeoutExpired, OSError):
                self.adb_cmd("kill-server", timeout=10)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # wait until the port is free: the server is gone
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                except OSError:
                    break
                time.sleep(0.02)
            self.running = False
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> "PrivateAdbServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
