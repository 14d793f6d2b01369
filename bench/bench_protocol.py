"""Protocol throughput: plaintext encode+decode vs secure seal+open against bare AEAD, the
fixed cost of a small message, and handshake latency.

    python bench/bench_protocol.py            # 64 B ... 256 MB
    python bench/bench_protocol.py --quick    # skip 256 MB

Prints one JSON document. Payload = one float32 array of the given size; MB/s = payload
megabytes (10^6 bytes) divided by the median time of one round trip (encode+decode or
seal+open) through real Endpoints. `bare_aead_*` is ChaCha20-Poly1305 (the `cryptography`
package) encrypting and decrypting the same payload bytes with a 120-byte associated data, in
the same loop: each repetition times the three in turn, so the ratios compare like with like
on a loaded machine. `*_cpu` figures use the process's CPU time instead of wall time.
`fixed_cost_us`: seal+open of the smallest payload minus the bare AEAD's time for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cryptography  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from protocol import Endpoint, Identity, Limits, Message, Registry, decode, encode  # noqa: E402

SIZES = [("64B", 64), ("1KB", 1024), ("64KB", 64 * 1024), ("1MB", 1024**2), ("16MB", 16 * 1024**2), ("256MB", 256 * 1024**2)]
LIMITS = Limits(max_rejections=10**9)


def _pair() -> tuple[Endpoint, Endpoint]:
    ids = {n: Identity.from_private_bytes(bytes([i + 1]) * 32, name=n) for i, n in enumerate(("source", "target"))}
    reg = Registry({n: i.public_bytes() for n, i in ids.items()})
    a = Endpoint("source", identity=ids["source"], registry=reg, limits=LIMITS, rng=os.urandom)
    b = Endpoint("target", identity=ids["target"], registry=reg, limits=LIMITS, rng=os.urandom)
    return a, b


def _handshake(a: Endpoint, b: Endpoint) -> None:
    (init,) = a.send(Message("control", "source", "target", meta={"op": "ping"}))
    _, (resp,) = b.receive(init)
    _, (finish, queued) = a.receive(resp)
    b.receive(finish)
    (delivered,), _ = b.receive(queued)
    assert delivered.meta["op"] == "ping"


def _reps(nbytes: int) -> int:
    return max(5, min(2000, int(64 * 1024**2 / max(nbytes, 1))))


def _median(times: list[float]) -> float:
    return statistics.median(times)


def bench_size(label: str, nbytes: int, a: Endpoint, b: Endpoint) -> dict:
    arr = np.random.default_rng(0).standard_normal(nbytes // 4, dtype=np.float32)
    msg = Message("artifact", "source", "target", arrays={"x": arr}, meta={"kind": "bench"})
    aead, nonce, aad, data = ChaCha20Poly1305(os.urandom(32)), os.urandom(12), os.urandom(120), arr.tobytes()
    reps = _reps(nbytes)
    enc, dec, seal, opn, bare = [], [], [], [], []
    plain_cpu, secure_cpu, bare_cpu = [], [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        env = encode(msg)
        t1 = time.perf_counter()
        back = decode(env)
        t2, c2 = time.perf_counter(), time.process_time()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
        plain_cpu.append(c2 - c0)
        del env, back
        c0, t0 = time.process_time(), time.perf_counter()
        (sealed,) = a.send(msg)
        t1 = time.perf_counter()
        (opened,), _ = b.receive(sealed)
        t2, c2 = time.perf_counter(), time.process_time()
        seal.append(t1 - t0)
        opn.append(t2 - t1)
        secure_cpu.append(c2 - c0)
        assert opened.arrays["x"].shape == arr.shape
        overhead = len(sealed) - arr.nbytes
        del sealed, opened
        c0, t0 = time.process_time(), time.perf_counter()
        aead.decrypt(nonce, aead.encrypt(nonce, data, aad), aad)
        t1, c1 = time.perf_counter(), time.process_time()
        bare.append(t1 - t0)
        bare_cpu.append(c1 - c0)
    mb = arr.nbytes / 1e6
    plain_rt = _median([e + d for e, d in zip(enc, dec)])
    secure_rt = _median([s + o for s, o in zip(seal, opn)])
    bare_rt = _median(bare)
    # CPU-time figures are less sensitive to other load on the machine than wall-clock ones
    # (at small sizes they are coarse: the clock ticks in microseconds).
    secure_c, bare_c = _median(secure_cpu), _median(bare_cpu)
    cpu = {
        "plaintext_encode_decode_MBps_cpu": round(mb / max(_median(plain_cpu), 1e-9), 1),
        "secure_seal_open_MBps_cpu": round(mb / max(secure_c, 1e-9), 1),
        "bare_aead_seal_open_MBps_cpu": round(mb / max(bare_c, 1e-9), 1),
        "secure_over_bare_aead_cpu": round(bare_c / max(secure_c, 1e-9), 3),
    }
    return {
        "payload": label,
        "payload_bytes": int(arr.nbytes),
        "repetitions": reps,
        "plaintext_encode_decode_MBps": round(mb / plain_rt, 1),
        "secure_seal_open_MBps": round(mb / secure_rt, 1),
        "bare_aead_seal_open_MBps": round(mb / bare_rt, 1),
        "secure_over_bare_aead": round(bare_rt / secure_rt, 3),
        "secure_seal_open_us": round(1e6 * secure_rt, 2),
        "bare_aead_seal_open_us": round(1e6 * bare_rt, 2),
        "plaintext_encode_MBps": round(mb / _median(enc), 1),
        "plaintext_decode_MBps": round(mb / _median(dec), 1),
        "secure_seal_MBps": round(mb / _median(seal), 1),
        "secure_open_MBps": round(mb / _median(opn), 1),
        "secure_over_plaintext_time": round(secure_rt / plain_rt, 2),
        "secure_envelope_overhead_bytes": int(overhead),
        **cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="skip the 256 MB payload")
    parser.add_argument("--handshakes", type=int, default=50, help="handshakes to time (median reported)")
    args = parser.parse_args(argv)

    a, b = _pair()
    _handshake(a, b)
    rows = [bench_size(label, n, a, b) for label, n in SIZES if not (args.quick and n > 16 * 1024**2)]

    times = []
    for _ in range(args.handshakes):
        x, y = _pair()
        t0 = time.perf_counter()
        _handshake(x, y)
        times.append(time.perf_counter() - t0)
    result = {
        "benchmark": "protocol",
        "quick": args.quick,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "throughput": rows,
        "fixed_cost_us": {
            "payload": rows[0]["payload"],
            "secure_seal_open_minus_bare_aead": round(rows[0]["secure_seal_open_us"] - rows[0]["bare_aead_seal_open_us"], 2),
        },
        "handshake": {
            "n": args.handshakes,
            "median_ms": round(1e3 * statistics.median(times), 3),
            "p90_ms": round(1e3 * sorted(times)[int(0.9 * (len(times) - 1))], 3),
            "note": "hs_init + hs_resp + hs_finish + first message, both sides, in one process",
        },
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
