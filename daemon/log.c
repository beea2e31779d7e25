#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"

void log_printf(int priority, const char *fmt, ...)
{
	static int tty = -1;
	char line[2048];
	va_list ap;

	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line: lines of concurrent threads do not mix. */
	if (tty)
		fprintf(stderr, "resyncd: %s\n", line);
	else
		fprintf(stderr, "<%d>resyncd: %s\n", priority & 7, line);
}
