/* resyncctl's commands that talk to resyncd (resyncctl-cluster.c). */
#pragma once

/* Defaults for the daemon commands, set by leading global options. */
extern const char *resyncctl_config;
extern const char *resyncctl_node;

int resyncctl_status(int argc, char **argv);
int resyncctl_verify(int argc, char **argv);
int resyncctl_resync(int argc, char **argv);
int resyncctl_cancel(int argc, char **argv);
/* resyncctl-events.c */
int resyncctl_events(int argc, char **argv);
int resyncctl_pause(int argc, char **argv);
int resyncctl_resume(int argc, char **argv);
int resyncctl_rate(int argc, char **argv);
/* Consume leading --config FILE / --node NAME; returns the count of argv
 * entries used after argv[0], or -1 on a missing value. */
int resyncctl_global_opts(int argc, char **argv);
