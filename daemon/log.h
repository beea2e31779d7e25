/* resyncd's log lines: to stderr, one line each, "resyncd: " and the
 * message. When stderr is not a terminal (journald, a file) each line
 * starts with its syslog priority, "<3>" error, "<4>" warning, "<6>" info,
 * which journald strips and keeps as the entry's level
 * (SyslogLevelPrefix=yes, the default). */
#pragma once

#include <stdbool.h>
#include <syslog.h>

void log_printf(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The level is said where the line is written, never guessed from its
 * words: an error is something that failed, a warning something refused
 * or left behind, information what went as asked. */
#define log_error(...) log_printf(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_printf(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_printf(LOG_INFO, __VA_ARGS__)

/* RESYNC_TRACE_PHASES=1 in the environment: a line on stderr at each step
 * of a resync (hashing, walk, checkpoints, flushes, proof, commit), with
 * the CLOCK_MONOTONIC time, the same clock in every process of the
 * machine, so that the steps of three daemons can be put in one order
 * (issue 18's measurements). Off, a trace costs one load. */
bool log_trace_on(void);
void log_trace_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define log_trace(...)                                 \
	do {                                            \
		if (log_trace_on())                     \
			log_trace_printf(__VA_ARGS__);  \
	} while (0)
