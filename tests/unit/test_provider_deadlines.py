"""emailtoken.providers.http's watchdog: every request's deadline fires, however the deadlines
interleave, though the thread is woken only for a new earliest one."""

from __future__ import annotations

import socket
import time

from emailtoken.providers.http import _Watchdog


class Conn:
    """A connection whose socket records its shutdown."""

    def __init__(self) -> None:
        self.sock, self.peer = socket.socketpair()

    def closed(self) -> bool:
        self.peer.settimeout(0.01)
        try:
            return self.peer.recv(1) == b""
        except TimeoutError:
            return False


def test_each_deadline_fires_in_order_and_finished_watches_never_do() -> None:
    dog = _Watchdog()
    now = time.monotonic()
    late, done, early = Conn(), Conn(), Conn()
    watches = [dog.watch(now + 1.6), dog.watch(now + 0.2), dog.watch(now + 0.6)]  # a later one first
    for watch, conn in zip(watches, (late, done, early), strict=True):
        watch.sockets.append(conn.sock)
    dog.finish(watches[1])  # answered in time
    time.sleep(1.1)
    assert watches[2].fired and early.closed(), "a deadline behind a later, earlier-pushed one still fires"
    assert not watches[0].fired and not late.closed()
    assert not watches[1].fired and not done.closed()
    time.sleep(1.2)
    assert watches[0].fired and late.closed()


def test_a_shorter_deadline_pushed_behind_many_longer_ones_fires_on_time() -> None:
    dog = _Watchdog()
    now = time.monotonic()
    for i in range(50):  # requests of a session with a long timeout, all answered but not yet dropped
        dog.finish(dog.watch(now + 30 + i))
    quick = dog.watch(time.monotonic() + 0.3)
    conn = Conn()
    quick.sockets.append(conn.sock)
    time.sleep(1.3)
    assert quick.fired and conn.closed()


class TlsTransport:
    """What urllib3 puts in ``conn.sock`` behind an https proxy: a wrapper without ``shutdown``."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def test_a_socket_behind_an_https_proxy_is_shut_and_the_watchdog_lives_on() -> None:
    dog = _Watchdog()
    conn = Conn()
    first = dog.watch(time.monotonic() + 0.1)
    first.sockets.append(TlsTransport(conn.sock))
    time.sleep(0.5)
    assert first.fired and conn.closed()
    dog.finish(first)
    later, after = Conn(), dog.watch(time.monotonic() + 0.1)
    after.sockets.append(later.sock)
    time.sleep(0.5)
    assert after.fired and later.closed(), "the watchdog thread still runs"


def test_a_socket_made_after_the_deadline_is_shut_until_the_request_ends() -> None:
    """DNS and one address after another can outlast the deadline; the socket that finally
    connects must not then serve a slow answer for ever."""
    dog = _Watchdog()
    watch = dog.watch(time.monotonic() + 0.1)
    time.sleep(0.4)
    assert watch.fired
    late = Conn()
    watch.sockets.append(late.sock)  # connected at last
    time.sleep(0.4)
    assert late.closed()
    dog.finish(watch)
    after = Conn()
    watch.sockets.append(after.sock)  # finished: nothing of it is shut any more
    time.sleep(0.4)
    assert not after.closed()
