"""TapDevice against the kernel, in a lab's client namespace (needs root).

The test itself plays the gateway 198.18.0.2: it answers ARP and ICMP echo by
hand (dpkt) so that the kernel's ping succeeds through the TAP, with and without
offloads; it checks that a frame marked NEEDS_CSUM is finished correctly; and it
completes a TCP handshake by hand so that the kernel hands over a TSO
super-segment.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time

import dpkt
import pytest

from apps.lab import LabConfig, lab_status, popen_in_ns, run_in_ns
from stack.netdev.netns import enter_netns
from stack.netdev.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    complete_checksum,
)
from stack.netdev.tap import TapDevice
from stack.skbuff import SkBuff
from stack.wire.checksum import ones_sum, pseudo_header_sum

pytestmark = pytest.mark.lab

GW_MAC = b"\x02\x00\x00\x00\x00\x02"
GW_IP = socket.inet_aton("198.18.0.2")
HOST_IP = socket.inet_aton("198.18.0.1")
ETH = dpkt.ethernet


def arp_reply(frame: bytes) -> bytes | None:
    """The gateway's answer to an ARP request for 198.18.0.2, else None."""
    eth = ETH.Ethernet(frame)
    arp = eth.data
    if eth.type != ETH.ETH_TYPE_ARP or arp.op != dpkt.arp.ARP_OP_REQUEST or arp.tpa != GW_IP:
        return None
    rep = dpkt.arp.ARP(op=dpkt.arp.ARP_OP_REPLY, sha=GW_MAC, spa=GW_IP, tha=arp.sha, tpa=arp.spa)
    return bytes(ETH.Ethernet(dst=eth.src, src=GW_MAC, type=ETH.ETH_TYPE_ARP, data=rep))


def echo_reply(frame: bytes) -> bytes | None:
    """The gateway's answer to an ICMP echo request for 198.18.0.2, else None."""
    eth = ETH.Ethernet(frame)
    ip = eth.data
    if eth.type != ETH.ETH_TYPE_IP or ip.p != dpkt.ip.IP_PROTO_ICMP or ip.dst != GW_IP:
        return None
    icmp = ip.data
    if icmp.type != dpkt.icmp.ICMP_ECHO:
        return None
    rep = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHOREPLY, code=0, data=icmp.data)
    rip = dpkt.ip.IP(src=GW_IP, dst=ip.src, p=dpkt.ip.IP_PROTO_ICMP, ttl=64, data=rep)
    rip.len = 20 + len(bytes(rep))
    return bytes(ETH.Ethernet(dst=eth.src, src=GW_MAC, type=ETH.ETH_TYPE_IP, data=rip))


def open_tap(cfg: LabConfig, offload: bool = True) -> TapDevice:
    """Attach to the client TAP and wait until the kernel uses the link.

    Attaching raises the carrier, but the kernel activates the device's queue only
    when its link watcher has run (operstate UP); frames the kernel sends before
    that are dropped (a lost ARP request costs a 1 s retry). Kernel frames read
    while waiting are discarded.
    """
    dev = TapDevice.open(cfg.client_tap, netns=cfg.client_ns, offload=offload)
    deadline = time.monotonic() + 10
    while lab_status(cfg)["client"]["state"] != "UP":
        if time.monotonic() > deadline:
            dev.close()
            raise AssertionError("TAP link did not come up within 10 s")
        select.select([dev], [], [], 0.05)
        dev.read_batch()
    return dev


def answer(dev: TapDevice, skb: SkBuff) -> None:
    """Reply to ARP and echo requests addressed to the gateway."""
    frame = skb.tobytes()
    reply = arp_reply(frame) or echo_reply(frame)
    if reply is not None:
        assert dev.write(SkBuff.from_bytes(reply, headroom=16))


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_ping_through_the_tap(lab: LabConfig, offload: bool) -> None:
    with open_tap(lab, offload) as dev:
        assert dev.offload is offload and dev.mtu == lab.mtu
        ping = popen_in_ns(lab.client_ns, "ping", "-c", "3", "-i", "0.2", "-W", "1",
                           "198.18.0.2", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while ping.poll() is None and time.monotonic() < deadline:
                select.select([dev], [], [], 0.1)
                for skb in dev.read_batch():
                    answer(dev, skb)
        finally:
            if ping.poll() is None:
                ping.kill()
            out = ping.communicate(timeout=10)[0].decode(errors="replace")
        assert ping.returncode == 0, out
        assert "3 received" in out
        assert dev.counters["tx_frames"] >= 4  # an ARP reply and three echo replies
        assert dev.counters["rx_errors"] == 0


def test_open_refuses_to_create_a_device(lab: LabConfig) -> None:
    before = run_in_ns(lab.client_ns, "ip", "-o", "link", "show", capture_output=True,
                       text=True, check=True).stdout
    with pytest.raises(FileNotFoundError, match="no TAP device"):
        TapDevice.open("tsnone0", netns=lab.client_ns)
    after = run_in_ns(lab.client_ns, "ip", "-o", "link", "show", capture_output=True,
                      text=True, check=True).stdout
    assert after == before and "tsnone0" not in after


def tap_mac(cfg: LabConfig) -> bytes:
    """The kernel side's MAC address of the client TAP."""
    return bytes.fromhex(lab_status(cfg)["client"]["mac"].replace(":", ""))


def udp_to_host(dst_mac: bytes, dport: int, payload: bytes, partial: bool) -> bytes:
    """A UDP frame from the gateway to 198.18.0.1; with ``partial`` its checksum field
    holds only the pseudo-header sum, as for VIRTIO_NET_HDR_F_NEEDS_CSUM."""
    udp = dpkt.udp.UDP(sport=5555, dport=dport, data=payload)
    udp.ulen = 8 + len(payload)
    ip = dpkt.ip.IP(src=GW_IP, dst=HOST_IP, p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
    ip.len = 20 + udp.ulen
    frame = bytearray(bytes(ETH.Ethernet(dst=dst_mac, src=GW_MAC, type=ETH.ETH_TYPE_IP,
                                         data=ip)))
    if partial:
        struct.pack_into("!H", frame, 40, pseudo_header_sum(GW_IP, HOST_IP, 17, udp.ulen))
    return bytes(frame)


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_partial_udp_checksum_is_completed(lab: LabConfig, offload: bool) -> None:
    with enter_netns(lab.client_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock, open_tap(lab, offload) as dev:
        sock.bind(("198.18.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        mac = tap_mac(lab)
        # Control: the same partial frame without the flag has a wrong checksum and
        # must be discarded by the kernel; the next one proves the path works.
        bad = SkBuff.from_bytes(udp_to_host(mac, port, b"unflagged", partial=True), headroom=16)
        assert dev.write(bad)
        good = SkBuff.from_bytes(udp_to_host(mac, port, b"finish me", partial=True),
                                 headroom=16)
        good.vnet_flags = VIRTIO_NET_HDR_F_NEEDS_CSUM
        good.csum_start, good.csum_offset = 34, 6
        assert dev.write(good)
        data, addr = sock.recvfrom(2048)
        assert (data, addr) == (b"finish me", ("198.18.0.2", 5555))


def syn_ack(frame: bytes, iss: int) -> bytes | None:
    """A SYN-ACK (MSS 1460, window 65535) answering a SYN to 198.18.0.2, else None."""
    eth = ETH.Ethernet(frame)
    ip = eth.data
    if eth.type != ETH.ETH_TYPE_IP or ip.p != dpkt.ip.IP_PROTO_TCP or ip.dst != GW_IP:
        return None
    tcp = ip.data
    if tcp.flags & 0x3F != dpkt.tcp.TH_SYN:
        return None
    rep = dpkt.tcp.TCP(sport=tcp.dport, dport=tcp.sport, seq=iss, ack=(tcp.seq + 1) % 2**32,
                       flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, win=65535,
                       opts=struct.pack("!BBH", 2, 4, 1460))
    rep.off = 6
    rip = dpkt.ip.IP(src=GW_IP, dst=ip.src, p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=rep)
    rip.len = 20 + len(bytes(rep))
    return bytes(ETH.Ethernet(dst=eth.src, src=GW_MAC, type=ETH.ETH_TYPE_IP, data=rip))


def test_kernel_hands_over_tcp_super_segments(lab: LabConfig) -> None:
    payload = os.urandom(60000)
    with enter_netns(lab.client_ns):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with client, open_tap(lab) as dev:
        client.setblocking(False)
        assert client.connect_ex(("198.18.0.2", 7000)) == 115  # EINPROGRESS
        supers: list[SkBuff] = []
        sent = False
        deadline = time.monotonic() + 10
        while not supers and time.monotonic() < deadline:
            select.select([dev], [client] if not sent else [], [], 0.1)
            if not sent and client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 \
                    and _connected(client):
                client.send(payload)
                sent = True
            for skb in dev.read_batch():
                frame = skb.tobytes()
                reply = arp_reply(frame) or syn_ack(frame, iss=1000)
                if reply is not None:
                    dev.write(SkBuff.from_bytes(reply, headroom=16))
                elif skb.gso_size:
                    supers.append(SkBuff.from_bytes(frame, headroom=16))
                    supers[-1].copy_vnet_from(skb)
        assert supers, "no super-segment within 10 s"
        seg = supers[0]
        frame = bytearray(seg.tobytes())
        assert seg.gso_type & ~VIRTIO_NET_HDR_GSO_ECN == VIRTIO_NET_HDR_GSO_TCPV4
        assert 0 < seg.gso_size <= 1460 and len(frame) > lab.mtu + 14
        assert seg.vnet_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM
        assert (seg.csum_start, seg.csum_offset) == (34, 16)
        complete_checksum(frame, 0, len(frame), seg.csum_start, seg.csum_offset)
        tcp_len = len(frame) - 34
        assert ones_sum(frame[34:], pseudo_header_sum(HOST_IP, GW_IP, 6, tcp_len)) == 0xFFFF
        data_off = (frame[34 + 12] >> 4) * 4
        assert frame[34 + data_off:] == payload[:tcp_len - data_off]


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True
