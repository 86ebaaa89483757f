"""Two copies of a boot environment: which one is in force, and where the next write goes. Pure.

``grub-editenv set`` rewrites its file in place (``O_TRUNC``), so a power cut in the middle
leaves an empty or torn block, which GRUB reads as no environment at all. The GRUB backend
therefore keeps two copies, the way U-Boot's redundant environment does: each carries
``ota_seq`` in 0-2, the copy whose number follows the other's (mod 3) is the newer, and every
write — the client's or GRUB's own ``save_env`` in ``contrib/grub/ota.cfg`` — replaces the
*older* copy with the next number. A torn write damages only a copy that was not in force, so
it cannot change which slot boots. GRUB has no arithmetic; mod 3 is a table it can compare.
"""

from __future__ import annotations

SEQS = ("0", "1", "2")
SEQ = "ota_seq"


def next_seq(seq: str | None) -> str:
    """The number a write after ``seq`` carries."""
    return SEQS[(SEQS.index(seq) + 1) % 3] if seq in SEQS else "0"


def in_force(seq0: str | None, seq1: str | None) -> int | None:
    """Which copy holds the decision (0 or 1), given their numbers (None: unreadable)."""
    valid0, valid1 = seq0 in SEQS, seq1 in SEQS
    if valid0 and valid1:
        return 1 if seq1 == next_seq(seq0) else 0
    if valid0:
        return 0
    if valid1:
        return 1
    return None
