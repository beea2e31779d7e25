#include "zadapt.h"

void zadapt_init(struct zadapt *a, int level, bool on)
{
	*a = (struct zadapt){.on = on, .level = level, .start = level, .lowest = level,
			     .highest = level, .share = ZADAPT_SHARE_ONE,
			     .share_low = ZADAPT_SHARE_ONE};
}

/* The share a window calls for at the lowest level (zadapt.h). The
 * sends waiting less than half the time zstd took means the link idled
 * while zstd ran: fewer parts. So too when the link carried its bytes
 * faster than zstd makes them: compressing can then only slow this
 * sender (a receiver slower than its link holds the sends back too, but
 * fewer bytes do not help it). The sends waiting longer than zstd took,
 * on a link slower than zstd, in two windows in a row (one stall of the
 * receiver, a flush, a starved CPU, is not a slow link): more parts. */
static unsigned zadapt_share(struct zadapt *a, bool shrinks)
{
	uint64_t usec = a->cpu_usec + a->wait_usec;
	bool idle = a->cpu_usec > 2 * a->wait_usec;
	bool link_fast = a->zrate && usec && a->packed * 1000000 / usec >= a->zrate;
	bool more = !idle && !link_fast && a->wait_usec > a->cpu_usec && shrinks;
	bool again = more && a->more;

	a->more = more && !again;
	if (idle || link_fast)
		return a->share > ZADAPT_SHARE_MIN ? a->share - 1 : a->share;
	if (again && a->share < ZADAPT_SHARE_ONE)
		return a->share + 1;
	return a->share;
}

/* The decision at the end of a window: the share while below the
 * lowest level (or the CPU holds the lowest level back), else the
 * level. */
static void zadapt_decide(struct zadapt *a)
{
	/* Less than 3 % saved: a higher level would cost CPU for nothing. */
	bool shrinks = a->packed < a->raw - a->raw / 32;

	if (a->tried && a->tried_usec)
		a->zrate = a->tried * 1000000 / a->tried_usec;
	if (a->share < ZADAPT_SHARE_ONE ||
	    (a->level == ZADAPT_LEVEL_MIN && a->cpu_usec > a->wait_usec)) {
		a->share = zadapt_share(a, shrinks);
		if (a->share < a->share_low)
			a->share_low = a->share;
	} else if (a->wait_usec > 2 * a->cpu_usec && a->level < ZADAPT_LEVEL_MAX &&
		   (shrinks || a->level < a->start)) {
		a->level++;
	} else if (a->cpu_usec > a->wait_usec && a->level > ZADAPT_LEVEL_MIN) {
		a->level--;
	}
	if (a->level < a->lowest)
		a->lowest = a->level;
	if (a->level > a->highest)
		a->highest = a->level;
}

int zadapt_note(struct zadapt *a, uint64_t raw, uint64_t packed, uint64_t cpu_usec,
		uint64_t wait_usec, bool tried)
{
	if (!a->on)
		return a->level;
	a->raw += raw;
	a->packed += packed;
	a->cpu_usec += cpu_usec;
	a->wait_usec += wait_usec;
	if (tried) {
		a->tried += raw;
		a->tried_usec += cpu_usec;
	}
	if (a->raw < ZADAPT_WINDOW_BYTES)
		return a->level;
	zadapt_decide(a);
	a->raw = a->packed = a->tried = a->tried_usec = a->cpu_usec = a->wait_usec = 0;
	return a->level;
}

bool zadapt_try(const struct zadapt *a)
{
	return a->skip == 0 && a->credit >= 0;
}

void zadapt_sent(struct zadapt *a, uint64_t raw, uint64_t packed, bool tried)
{
	if (!tried && a->skip) {
		a->skip = raw >= a->skip ? 0 : a->skip - raw;
		a->skipped += raw;
		return;
	}
	/* Each frame earns its share of a try; a try spends a whole one. */
	a->credit += (int64_t)(raw * a->share) - (tried ? (int64_t)(raw * ZADAPT_SHARE_ONE) : 0);
	if (!tried) {
		a->mixed += raw;
		return;
	}
	if (packed < raw) {
		a->raw_streak = 0;
		return;
	}
	if (++a->raw_streak >= ZADAPT_RAW_STREAK)
		a->skip = ZADAPT_RAW_SKIP_BYTES;
}
