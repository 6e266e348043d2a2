"""An HTTP/1.1 forward proxy on the stack: request parsing, a shared RFC 9111 cache,
CONNECT tunnels (spliced in splice mode) and a Squid-format access log."""
