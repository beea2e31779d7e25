#include <errno.h>
#include <json-c/json.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "ratectl.h"
#include "resync/clock.h"
#include "resync/macro.h"

enum { RATECTL_TICK_USEC = 50000 };

void ratectl_reset(struct ratectl *rc, uint64_t rate)
{
	atomic_store(&rc->rate, rate);
	atomic_store(&rc->paused, false);
	atomic_fetch_add(&rc->gen, 1);
}

void ratectl_set_rate(struct ratectl *rc, uint64_t rate)
{
	atomic_store(&rc->rate, rate);
	atomic_fetch_add(&rc->gen, 1);
}

void ratectl_set_paused(struct ratectl *rc, bool paused)
{
	atomic_store(&rc->paused, paused);
	atomic_fetch_add(&rc->gen, 1);
}

void ratectl_pace(struct ratectl *rc, struct pacer *p, uint64_t k, const atomic_bool *cancel)
{
	unsigned gen = atomic_load(&rc->gen);

	if (!p->started || p->gen != gen) {
		/* A change (or the first batch): the account starts over now,
		 * so a new rate applies from here, not from the beginning. */
		p->started = true;
		p->gen = gen;
		p->t0 = clock_usec();
		p->done = 0;
	}
	p->done += k;
	for (;;) {
		uint64_t rate, due, now;

		if (atomic_load(cancel) || (p->stop && atomic_load(p->stop)))
			return;
		if (atomic_load(&rc->paused) && !p->ignore_pause) {
			if (p->on_wait)
				p->on_wait(p->on_wait_arg);
			usleep(RATECTL_TICK_USEC);
			continue;
		}
		if (atomic_load(&rc->gen) != p->gen) {
			/* Changed while waiting: what was sent counts at the
			 * new rate from now. */
			p->gen = atomic_load(&rc->gen);
			p->t0 = clock_usec();
			p->done = k;
		}
		rate = atomic_load(&rc->rate);
		if (!rate)
			return;
		due = p->t0 + (uint64_t)((double)p->done * 1e6 / (double)rate);
		now = clock_usec();
		if (now >= due)
			return;
		if (p->on_wait)
			p->on_wait(p->on_wait_arg);
		usleep((useconds_t)MIN(due - now, (uint64_t)RATECTL_TICK_USEC));
	}
}

int ratectl_cmd(struct ratectl *rc, bool running, struct control_client *cli, json_object *req)
{
	json_object *cmd, *v, *res;
	const char *name;

	if (!json_object_object_get_ex(req, "cmd", &cmd))
		return -EINVAL;
	name = json_object_get_string(cmd);
	if (!running)
		return control_client_error(cli, "no resync is running"), 0;
	if (!strcmp(name, "pause")) {
		ratectl_set_paused(rc, true);
	} else if (!strcmp(name, "resume")) {
		ratectl_set_paused(rc, false);
	} else if (!strcmp(name, "rate")) {
		if (!json_object_object_get_ex(req, "rate", &v) ||
		    !(json_object_is_type(v, json_type_int)) || json_object_get_int64(v) < 0)
			return control_client_error(cli, "rate: \"rate\" must be a number of bytes per second, 0 = unlimited"), 0;
		ratectl_set_rate(rc, (uint64_t)json_object_get_int64(v));
	} else {
		return -EINVAL;
	}
	res = json_object_new_object();
	json_object_object_add(res, "paused", json_object_new_boolean(atomic_load(&rc->paused)));
	json_object_object_add(res, "max_rate", json_object_new_uint64(atomic_load(&rc->rate)));
	json_object_object_add(res, "running", json_object_new_boolean(running));
	return control_client_result(cli, res);
}
