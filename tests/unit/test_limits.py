"""Every limit the program and the control plane share is one number: the program's
(files/bpf/multiwan.h) and the Python that fills its maps or checks the inventory agree."""
import re
from pathlib import Path

from ansible_collections.netlb.multiwan.plugins.module_utils import datapath, schema, selection

HEADER = Path(__file__).resolve().parents[2] / "files" / "bpf" / "multiwan.h"


def defines():
    return dict((m.group(1), int(m.group(2), 0))
                for m in re.finditer(r"^#define (MW_\w+) (0x[0-9a-f]+|\d+)\b", HEADER.read_text(), re.M))


def test_the_program_and_the_control_plane_share_every_limit():
    c = defines()
    assert c["MW_MAX_UPLINKS"] == datapath.MAX_UPLINKS == schema.MAX_UPLINKS
    assert c["MW_ROTATION_MAX"] == selection.ROTATION_MAX
    assert c["MW_BUCKETS"] == selection.BUCKETS and c["MW_BUCKETS"] & (c["MW_BUCKETS"] - 1) == 0
    assert c["MW_NO_UPLINK"] == selection.NO_UPLINK
    assert c["MW_MAX_EXCLUDES"] == schema.MAX_EXCLUDES
    assert c["MW_IFNAMSIZ"] == datapath.IFNAMSIZ
    assert (c["MW_SLOT_USABLE"], c["MW_SLOT_UDP_SOURCE"]) == (datapath.SLOT_USABLE, datapath.SLOT_UDP_SOURCE)
    assert (c["MW_POLICY_RANDOM"], c["MW_POLICY_ROTATION"], c["MW_POLICY_HASH_DST"]) == (
        datapath.POLICY_IDS["random"], datapath.POLICY_IDS["weighted"], datapath.POLICY_IDS["hash_dst"])
