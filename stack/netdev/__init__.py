"""The only device I/O of the stack (DESIGN.md, layout).

* :mod:`stack.netdev.tap` - TAP devices with virtio_net_hdr offloads (pytun);
* :mod:`stack.netdev.raw` - packet sockets on existing interfaces, the same offloads;
* :mod:`stack.netdev.memory` - an in-memory link pair on a virtual clock, with the
  fault model of :mod:`stack.netdev.faults`;
* :mod:`stack.netdev.pcap` - pcap capture of every frame crossing a device;
* :mod:`stack.netdev.netns` - entering a network namespace to attach to its TAP;
* :mod:`stack.netdev.offload` - vnet header checks and software checksum completion.

Nothing is imported here so that simulation code does not load pytun.
"""
