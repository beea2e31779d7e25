"""The named failpoints of a resync (resync/failpoint.h), by the role of
the daemon that reaches them, each with the way a first resync reaches
it; shared by the crash matrix and tools/soak."""

# (failpoint, how the first resync reaches it); "name@gate": name's
# hits count from the gate's first hit on (resync/failpoint.h)
#   quick: the cluster was in sync, then written through the mounts;
#   full: an image edited while its daemon was stopped (a full compare);
#   rollback: a resync --undo, then a rollback of s1 (the failpoint's).
PRIMARY = [
    ("primary-connect", "quick"),
    ("primary-hello-status", "quick"),
    ("primary-planned", "quick"),
    ("primary-hashed", "full"),
    ("primary-bitmap-read", "quick"),
    ("primary-quick-ranges", "quick"),
    ("primary-tree-level", "full"),
    ("primary-compared", "full"),
    ("primary-undo-sent", "quick"),
    ("primary-batch-sent", "full"),
    ("primary-checkpoint-before", "full"),
    ("primary-checkpoint-sent", "quick"),
    ("primary-pass1-done", "full"),
    ("primary-fence-started", "quick"),
    ("primary-proof-computed", "full"),
    ("primary-proof-received", "quick"),
    ("primary-commit-before", "full"),
    ("primary-commit-acked", "quick"),
    ("primary-generation-before", "full"),
    ("primary-generation-after", "quick"),
    ("primary-fence-ended", "full"),
    ("primary-report", "quick"),
    ("primary-rollback-sent", "rollback"),
    # Inside the metadata's update (engine/meta.c), from a gate on:
    ("meta-header-written@primary-generation-before", "quick"),
    ("meta-bitmap-written@primary-generation-before", "full"),
]
SECONDARY = [
    ("secondary-hello", "quick"),
    ("secondary-status", "quick"),
    # the resync's HELLO again on its plan's connection (plan-keep.c)
    ("secondary-rehello", "quick"),
    ("secondary-bitmap", "quick"),
    ("secondary-tree-built", "full"),
    ("secondary-hash-reply", "full"),
    ("secondary-undo-mode", "quick"),
    ("secondary-fenced", "full"),
    ("secondary-undo-created", "quick"),
    ("secondary-inconsistent", "full"),
    ("secondary-undo-saved", "quick"),
    ("secondary-undo-synced", "full"),
    ("secondary-batch-before-write", "quick"),
    ("secondary-batch-extent-written", "full"),
    ("secondary-batch-written", "quick"),
    ("secondary-writeback", "full"),
    ("secondary-checkpoint-synced", "quick"),
    ("secondary-checkpoint-saved", "full"),
    ("secondary-proof-synced", "quick"),
    ("secondary-proof-sent", "full"),
    ("secondary-commit-received", "quick"),
    ("secondary-commit-synced", "full"),
    ("secondary-commit-saved", "quick"),
    ("secondary-commit-before-ack", "full"),
    ("secondary-rollback-inconsistent", "rollback"),
    ("secondary-rollback-record", "rollback"),
    ("secondary-rollback-applied", "rollback"),
    ("meta-bitmap-written@secondary-fenced", "full"),
    ("meta-header-written@secondary-checkpoint-synced", "quick"),
    ("meta-synced@secondary-commit-synced", "full"),
    ("meta-header-written@secondary-commit-synced", "quick"),
]


def spec(fp, action="kill", n=1):
    """The RESYNC_FAILPOINT value of entry fp ("name" or "name@gate")."""
    name, _, gate = fp.partition("@")
    return "%s:%s:%d%s" % (name, action, n, "@" + gate if gate else "")


def role(fp):
    """The daemon that reaches fp: 'p' (primary) or a secondary."""
    name, _, gate = fp.partition("@")
    return "p" if (gate or name).startswith("primary") else "s"


# Places that fail their step with EIO under the action error
# (FAILPOINT_RETURN): the resync fails with the reason, the daemon lives.
ERRORS = [
    ("secondary-batch-extent-written", "full"),
    ("secondary-batch-written", "quick"),
    ("secondary-checkpoint-synced", "quick"),
    ("secondary-commit-synced", "full"),
    ("secondary-commit-saved", "quick"),
    ("primary-batch-sent", "full"),
    ("primary-proof-received", "quick"),
    ("primary-commit-before", "quick"),
]
