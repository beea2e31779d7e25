/* resyncd's log lines: to stderr, one line each, "resyncd: " and the
 * message. When stderr is not a terminal (journald, a file) each line
 * starts with its syslog priority, "<3>" error, "<4>" warning, "<6>" info,
 * which journald strips and keeps as the entry's level
 * (SyslogLevelPrefix=yes, the default). */
#pragma once

#include <syslog.h>

void log_printf(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
