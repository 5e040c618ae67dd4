"""pytun_hash: virtio-net hashing (RSS and hash reports) for Linux TUN/TAP devices."""
