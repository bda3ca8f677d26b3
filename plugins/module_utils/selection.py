# -*- coding: utf-8 -*-
# Copyright: netlb.multiwan contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The control plane's selection tables, computed here so the program stays O(1).

The program picks an uplink with one array lookup: ``rotation[cursor % length]``
for the rotating policies, ``buckets[hash(dst) % BUCKETS]`` for hash_dst. Which
uplinks are in the tables (active, up, weight > 0) and how often is decided
here, whenever the state or a weight changes; the program never loops over
uplinks. The same approach as Katran's and Cilium's Maglev tables.

- ``rotation``: smooth weighted round robin (nginx's): weights 2:1:1 give
  a, b, a, c - every uplink its exact share over every ``sum(weights)``
  sequential connects, and spread out rather than in runs.
- ``buckets``: a consistent-hash table of BUCKETS entries, each bucket given to
  the uplink with the highest weighted rendezvous score (HRW). When an uplink
  leaves, exactly its buckets move and every other destination keeps its
  uplink; Maglev's permutation fill moves a few others too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import math
import struct

ROTATION_MAX = 1024   # entries of the rotation table (the program's array size)
BUCKETS = 4096        # hash_dst buckets (the program masks the hash: a power of two), 256 per uplink at 16
NO_UPLINK = 0xff      # in a table: no uplink is usable, leave the socket alone


def _gcd(values):
    out = 0
    for v in values:
        out = math.gcd(out, v)
    return out or 1


def scaled_weights(weights, limit=ROTATION_MAX):
    """{slot: weight} reduced by their gcd and, if their sum exceeds *limit*,
    scaled down (largest remainder, every uplink keeps at least 1)."""
    weights = dict((s, w) for s, w in weights.items() if w > 0)
    if not weights:
        return {}
    g = _gcd(weights.values())
    weights = dict((s, w // g) for s, w in weights.items())
    total = sum(weights.values())
    if total <= limit:
        return weights
    if len(weights) > limit:
        raise ValueError("more uplinks than rotation entries")
    spare = limit - len(weights)
    exact = dict((s, w * spare / float(total)) for s, w in weights.items())
    out = dict((s, 1 + int(x)) for s, x in exact.items())
    left = limit - sum(out.values())
    for s in sorted(exact, key=lambda k: (-(exact[k] - int(exact[k])), k))[:left]:
        out[s] += 1
    return out


def rotation(weights, limit=ROTATION_MAX):
    """Smooth weighted round robin over {slot: weight}: a list of slots whose
    length is the (reduced) total weight. Empty when no weight is positive."""
    weights = scaled_weights(weights, limit)
    total = sum(weights.values())
    current = dict((s, 0) for s in weights)
    out = []
    for _position in range(total):
        for s in weights:
            current[s] += weights[s]
        best = max(sorted(current), key=lambda k: current[k])   # ties: the lowest slot
        current[best] -= total
        out.append(best)
    return out


def _score(bucket, slot, weight):
    digest = hashlib.blake2b(struct.pack("<II", bucket, slot), digest_size=8).digest()
    unit = (struct.unpack("<Q", digest)[0] + 0.5) / 2.0 ** 64   # in (0, 1)
    return -weight / math.log(unit)


_LAST_BUCKETS = [None, None]  # (live weights, size), table


def buckets(weights, size=BUCKETS):
    """Weighted rendezvous hashing over {slot: weight}: a list of *size* slots,
    NO_UPLINK everywhere when no weight is positive. The last table is kept: every
    attachment of a host converges the same one (8192 hashes per uplink each)."""
    live = tuple(sorted((s, w) for s, w in weights.items() if w > 0))
    if not live:
        return [NO_UPLINK] * size
    if _LAST_BUCKETS[0] != (live, size):
        _LAST_BUCKETS[:] = [(live, size), [max(live, key=lambda sw: (_score(b, sw[0], sw[1]), -sw[0]))[0]
                                           for b in range(size)]]
    return list(_LAST_BUCKETS[1])
