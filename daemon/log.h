/* resyncd's log lines: to stderr, one line each, "resyncd: " and the
 * message. When stderr is not a terminal (journald, a file) each line
 * starts with its syslog priority, "<3>" error, "<4>" warning, "<6>" info,
 * which journald strips and keeps as the entry's level
 * (SyslogLevelPrefix=yes, the default). */
#pragma once

#include <syslog.h>

void log_printf(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The level is said where the line is written, never guessed from its
 * words: an error is something that failed, a warning something refused
 * or left behind, information what went as asked. */
#define log_error(...) log_printf(LOG_ERR, __VA_ARGS__)
#define log_warning(...) log_printf(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_printf(LOG_INFO, __VA_ARGS__)
