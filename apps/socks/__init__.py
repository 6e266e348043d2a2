"""A SOCKS5 (RFC 1928, RFC 1929) and SOCKS4/4a proxy on the stack.

:mod:`.protocol` holds the sans-I/O codecs, :mod:`.policy` the access rules,
:mod:`.server` the connection handler (copy mode; splice mode is a hook for the
splice layer) and :mod:`.cli` the `tapsplice socks` command.
"""
