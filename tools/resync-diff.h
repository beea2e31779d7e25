/* The commands of resync-diff, one file each where they are large. */
#pragma once

/* One error line on stderr, "resync-diff: " first. */
void resync_diff_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int cmd_sync(int argc, char **argv);
int cmd_compare(int argc, char **argv);
/* librsync-format commands, argument-compatible with rdiff. */
int cmd_signature(int argc, char **argv);
int cmd_delta(int argc, char **argv);
int cmd_patch(int argc, char **argv);
