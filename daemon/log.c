#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
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

bool log_trace_on(void)
{
	static atomic_int on = -1;

	if (atomic_load(&on) < 0) {
		const char *e = getenv("RESYNC_TRACE_PHASES");

		atomic_store(&on, e && *e && strcmp(e, "0"));
	}
	return atomic_load(&on) > 0;
}

/* The process's reads and writes so far (/proc/self/io): calls and
 * bytes; zeros when it cannot be read. */
static void log_trace_io(unsigned long long v[4])
{
	static const char *const keys[4] = {"syscr: ", "syscw: ", "rchar: ", "wchar: "};
	char line[128];
	FILE *f = fopen("/proc/self/io", "re");

	memset(v, 0, 4 * sizeof(*v));
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		for (int i = 0; i < 4; i++)
			if (!strncmp(line, keys[i], strlen(keys[i])))
				v[i] = strtoull(line + strlen(keys[i]), NULL, 10);
	fclose(f);
}

void log_trace_printf(const char *fmt, ...)
{
	struct timespec ts;
	struct rusage ru;
	unsigned long long io[4];
	char line[1024];
	va_list ap;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	getrusage(RUSAGE_SELF, &ru);
	log_trace_io(io);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* The time, then the process's CPU (user + system, ms), context
	 * switches (voluntary/involuntary), read and write calls and bytes. */
	fprintf(stderr, "resyncd: trace %lld.%06ld cpu %.1f+%.1f cs %ld/%ld io %llu/%llu %llu/%llu %s\n",
		(long long)ts.tv_sec, ts.tv_nsec / 1000,
		(double)ru.ru_utime.tv_sec * 1e3 + (double)ru.ru_utime.tv_usec / 1e3,
		(double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3, ru.ru_nvcsw,
		ru.ru_nivcsw, io[0], io[1], io[2], io[3], line);
}
