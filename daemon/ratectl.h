/* Live control of a running resync's pace: a maximum rate that
 * `resyncctl rate RATE` changes while blocks flow, and a pause that
 * `resyncctl pause` / `resume` set. The transfer loop of every secondary
 * reads them through a pacer of its own after each batch it sends. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct json_object;
struct control_client;

struct ratectl {
	_Atomic uint64_t rate; /* bytes per second, 0 = unlimited */
	atomic_bool paused;
	atomic_uint gen; /* bumped by every change, so pacers start over */
};

/* One transfer loop's account: bytes sent since t0 at the rate seen then. */
struct pacer {
	uint64_t t0, done;
	unsigned gen;
	bool started;
	/* Called on the pacing thread at every tick that ratectl_pace()
	 * waits (paused, or ahead of the rate), e.g. to keep the loop's
	 * connection alive; NULL: none. Set by the loop's owner. */
	void (*on_wait)(void *arg);
	void *on_wait_arg;
	/* The primary's last pass, under its fence: a pause does not hold
	 * it (a pause never holds the primary's writers); the rate does. */
	bool ignore_pause;
	/* Another reason to stop waiting at once (NULL: none): the job was
	 * given up on. Set by the loop's owner. */
	const atomic_bool *stop;
};

/* A new run at rate (0 = unlimited), not paused. Not concurrent with pace. */
void ratectl_reset(struct ratectl *rc, uint64_t rate);
void ratectl_set_rate(struct ratectl *rc, uint64_t rate);
void ratectl_set_paused(struct ratectl *rc, bool paused);

/* Account k bytes just sent and wait as long as the rate and a pause ask
 * (a pause not when p->ignore_pause); returns early when *cancel or
 * *p->stop turns true. Wakes at least every 50 ms to
 * see changes, and calls p->on_wait (if any) each time it waits. */
void ratectl_pace(struct ratectl *rc, struct pacer *p, uint64_t k, const atomic_bool *cancel);

/* The control commands "pause", "resume" and "rate" ({"rate": N}) against
 * rc; running says whether a resync is in progress (changes apply to it and
 * end with it: the next resync starts from its own max_rate). Answers
 * {"paused": bool, "max_rate": N, "running": bool}. */
int ratectl_cmd(struct ratectl *rc, bool running, struct control_client *cli,
		struct json_object *req);
