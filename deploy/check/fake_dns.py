"""A minimal DNS server on 127.0.0.1 for scripts/check-deploy.

It stands in for Docker's embedded DNS so that the compose nginx config's
`server gateway:PORT resolve;` can be watched following a change in the
replica set, without Docker. It answers A queries from a JSON zone file
({"name": ["127.0.0.2", ...]}) that it re-reads on every query, NXDOMAIN for
other names, and prints its UDP port on the first line of stdout.
It serves loopback only and stops when its parent kills it.

    python3 fake_dns.py ZONE_FILE
"""

import json
import socket
import struct
import sys

TTL_SECONDS = 1


def answer(query: bytes, zone: dict) -> bytes:
    txid, _flags, _qdcount = struct.unpack(">HHH", query[:6])
    pos, labels = 12, []
    while query[pos]:
        length = query[pos]
        labels.append(query[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    qtype = struct.unpack(">H", query[pos + 1 : pos + 3])[0]
    question = query[12 : pos + 5]
    name = ".".join(labels).lower()
    addresses = zone.get(name, []) if qtype == 1 else []
    rcode = 0 if name in zone else 3
    records = b"".join(
        b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, TTL_SECONDS, 4) + socket.inet_aton(addr) for addr in addresses
    )
    header = struct.pack(">HHHHHH", txid, 0x8180 | rcode, 1, len(addresses), 0, 0)
    return header + question + records


def main() -> None:
    zone_file = sys.argv[1]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    while True:
        query, client = server.recvfrom(512)
        try:
            with open(zone_file) as f:
                zone = json.load(f)
            server.sendto(answer(query, zone), client)
        except (OSError, ValueError, IndexError, struct.error):
            continue


if __name__ == "__main__":
    main()
