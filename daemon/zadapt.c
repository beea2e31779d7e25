#include "zadapt.h"

void zadapt_init(struct zadapt *a, int level, bool on)
{
	*a = (struct zadapt){.on = on, .level = level, .start = level, .lowest = level,
			     .highest = level};
}

int zadapt_note(struct zadapt *a, uint64_t raw, uint64_t packed, uint64_t cpu_usec,
		uint64_t wait_usec)
{
	bool shrinks;

	if (!a->on)
		return a->level;
	a->raw += raw;
	a->packed += packed;
	a->cpu_usec += cpu_usec;
	a->wait_usec += wait_usec;
	if (a->raw < ZADAPT_WINDOW_BYTES)
		return a->level;
	/* Less than 3 % saved: a higher level would cost CPU for nothing. */
	shrinks = a->packed < a->raw - a->raw / 32;
	if (a->wait_usec > 2 * a->cpu_usec && a->level < ZADAPT_LEVEL_MAX &&
	    (shrinks || a->level < a->start))
		a->level++;
	else if (a->cpu_usec > a->wait_usec && a->level > ZADAPT_LEVEL_MIN)
		a->level--;
	if (a->level < a->lowest)
		a->lowest = a->level;
	if (a->level > a->highest)
		a->highest = a->level;
	a->raw = a->packed = a->cpu_usec = a->wait_usec = 0;
	return a->level;
}

bool zadapt_try(const struct zadapt *a)
{
	return a->skip == 0;
}

void zadapt_sent(struct zadapt *a, uint64_t raw, uint64_t packed, bool tried)
{
	if (!tried) {
		a->skip = raw >= a->skip ? 0 : a->skip - raw;
		a->skipped += raw;
		return;
	}
	if (packed < raw) {
		a->raw_streak = 0;
		return;
	}
	if (++a->raw_streak >= ZADAPT_RAW_STREAK)
		a->skip = ZADAPT_RAW_SKIP_BYTES;
}
