"""SkBuff and SkbQueue: invariants under random operation sequences, misuse raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stack.skbuff import SkbError, SkbQueue, SkBuff


def test_push_pull_put_trim_views():
    skb = SkBuff(100, headroom=20)
    assert (skb.headroom, skb.tailroom, len(skb)) == (20, 80, 0)
    skb.put(5)[:] = b"hello"
    skb.push(3)[:] = b"hdr"
    assert skb.tobytes() == b"hdrhello"
    assert bytes(skb.pull(3)) == b"hdr"
    skb.trim(2)
    assert skb.tobytes() == b"he"
    assert skb.truesize >= 100


def test_misuse_raises_and_changes_nothing():
    skb = SkBuff(10, headroom=2)
    skb.put(4)
    state = (skb.data, skb.tail)
    for bad in (lambda: skb.push(3), lambda: skb.pull(5), lambda: skb.put(5),
                lambda: skb.trim(-1), lambda: skb.reserve(1), lambda: skb.put_data(b"x" * 5)):
        with pytest.raises(SkbError):
            bad()
        assert (skb.data, skb.tail) == state
    with pytest.raises(SkbError):
        SkBuff(5, headroom=6)


class SkBuffMachine(RuleBasedStateMachine):
    """Random push/pull/put/trim keep head <= data <= tail <= end and len == tail - data."""

    def __init__(self) -> None:
        super().__init__()
        self.skb = SkBuff(64, headroom=16)
        self.model = bytearray()

    @rule(n=st.integers(0, 70), fill=st.integers(0, 255))
    def push(self, n, fill):
        if n > self.skb.headroom:
            with pytest.raises(SkbError):
                self.skb.push(n)
        else:
            self.skb.push(n)[:] = bytes([fill]) * n
            self.model[:0] = bytes([fill]) * n

    @rule(n=st.integers(0, 70))
    def pull(self, n):
        if n > len(self.skb):
            with pytest.raises(SkbError):
                self.skb.pull(n)
        else:
            assert bytes(self.skb.pull(n)) == bytes(self.model[:n])
            del self.model[:n]

    @rule(data=st.binary(max_size=70))
    def put(self, data):
        if len(data) > self.skb.tailroom:
            with pytest.raises(SkbError):
                self.skb.put_data(data)
        else:
            self.skb.put_data(data)
            self.model += data

    @rule(n=st.integers(0, 70))
    def trim(self, n):
        self.skb.trim(n)
        del self.model[n:]

    @invariant()
    def boundaries(self):
        s = self.skb
        assert s.head <= s.data <= s.tail <= s.end
        assert len(s) == s.tail - s.data == len(self.model)
        assert s.tobytes() == bytes(self.model)


TestSkBuffMachine = SkBuffMachine.TestCase
TestSkBuffMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


class QueueMachine(RuleBasedStateMachine):
    """SkbQueue against a Python list model: order, length, truesize, ownership."""

    def __init__(self) -> None:
        super().__init__()
        self.q = SkbQueue()
        self.other = SkbQueue()
        self.model: list[SkBuff] = []
        self.other_model: list[SkBuff] = []

    @rule(size=st.integers(0, 50), front=st.booleans())
    def add(self, size, front):
        skb = SkBuff(size)
        if front:
            self.q.prepend(skb)
            self.model.insert(0, skb)
        else:
            self.q.append(skb)
            self.model.append(skb)
        with pytest.raises(SkbError):
            self.other.append(skb)  # already queued

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def unlink_any(self, data):
        i = data.draw(st.integers(0, len(self.model) - 1))
        skb = self.model.pop(i)
        self.q.unlink(skb)
        assert skb.queue is None and skb.next is None and skb.prev is None

    @precondition(lambda self: self.model)
    @rule(data=st.data(), after=st.booleans())
    def insert_next_to(self, data, after):
        i = data.draw(st.integers(0, len(self.model) - 1))
        skb = SkBuff(8)
        if after:
            self.q.insert_after(self.model[i], skb)
            self.model.insert(i + 1, skb)
        else:
            self.q.insert_before(self.model[i], skb)
            self.model.insert(i, skb)

    @rule(tail=st.booleans())
    def pop(self, tail):
        if not self.model:
            with pytest.raises(SkbError):
                self.q.pop_tail() if tail else self.q.pop()
            return
        got = self.q.pop_tail() if tail else self.q.pop()
        assert got is (self.model.pop() if tail else self.model.pop(0))

    @rule(n=st.integers(0, 3))
    def splice_in(self, n):
        for _ in range(n):
            skb = SkBuff(4)
            self.other.append(skb)
            self.other_model.append(skb)
        self.q.splice_tail(self.other)
        self.model += self.other_model
        self.other_model = []
        assert len(self.other) == 0 and self.other.truesize == 0

    @invariant()
    def matches_model(self):
        assert list(self.q) == self.model
        assert list(self.q.reversed()) == self.model[::-1]
        assert len(self.q) == len(self.model)
        assert self.q.truesize == sum(s.truesize for s in self.model)
        assert all(s.queue is self.q for s in self.model)
        assert self.q.peek() is (self.model[0] if self.model else None)
        assert self.q.peek_tail() is (self.model[-1] if self.model else None)


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_unlink_foreign_and_self_splice_raise():
    a, b = SkbQueue(), SkbQueue()
    skb = SkBuff(1)
    a.append(skb)
    with pytest.raises(SkbError):
        b.unlink(skb)
    with pytest.raises(SkbError):
        a.splice_tail(a)
    assert a.purge() == 1 and len(a) == 0


@given(st.lists(st.integers(0, 20), max_size=20))
def test_iteration_allows_unlinking_current(sizes):
    q = SkbQueue()
    for s in sizes:
        q.append(SkBuff(s))
    for skb in q:
        if skb.end % 2:
            q.unlink(skb)
    assert [s.end for s in q] == [s for s in sizes if s % 2 == 0]
