/* Notifications (notify.h): the notifier, its queue and its worker. The
 * spool and the three channels are in notify-spool.c, notify-email.c,
 * notify-webhook.c and notify-command.c (see notify-int.h). */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "json-util.h"
#include "events.h"
#include "log.h"
#include "notify-int.h"
#include "notify.h"
#include "resync/clock.h"
#include "resync/fileio.h"
#include "resync/macro.h"
#include "resync/meta.h"

const struct notify_channel_info notify_channel_table[] = {
	{NOTIFY_EMAIL, "email"},
	{NOTIFY_WEBHOOK, "webhook"},
	{NOTIFY_COMMAND, "command"},
};
_Static_assert(ARRAY_SIZE(notify_channel_table) == NOTIFY_CHANNEL_COUNT, "one entry a channel");

const char *notify_channel_name(enum notify_channel ch)
{
	for (size_t i = 0; i < NOTIFY_CHANNEL_COUNT; i++)
		if (notify_channel_table[i].bit == ch)
			return notify_channel_table[i].name;
	return "";
}

unsigned notify_channels(const struct cluster_config *cfg)
{
	return (cfg->notify_email && cfg->smtp_url ? NOTIFY_EMAIL : 0) |
	       (cfg->notify_webhook ? NOTIFY_WEBHOOK : 0) |
	       (cfg->notify_command ? NOTIFY_COMMAND : 0);
}

/* ---- the queue ---- */

void notify_item_free(struct item *it)
{
	if (!it)
		return;
	json_object_put(it->doc);
	free(it);
}

/* Add it to the list (takes it). Called with n->lock held. */
void notify_items_add(struct notify *n, struct item *it)
{
	struct item **pp = &n->items;

	while (*pp)
		pp = &(*pp)->next;
	*pp = it;
	n->n_items++;
}

int notify_submit(struct notify *n, json_object *payload)
{
	json_object *doc;
	struct item *it;
	uint32_t rnd = 0;
	int64_t now = clock_real_usec();
	char t[64];
	int r;

	if (!n || !n->channels) {
		json_object_put(payload);
		return 0;
	}
	it = calloc(1, sizeof(*it));
	doc = json_object_new_object();
	if (!it || !doc) {
		free(it);
		json_object_put(doc);
		json_object_put(payload);
		return -ENOMEM;
	}
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)now ^ (uint32_t)getpid();
	if (jstr(payload, "id"))
		snprintf(it->id, sizeof(it->id), "%s", jstr(payload, "id"));
	else
		snprintf(it->id, sizeof(it->id), "%" PRId64 "-%08x", now, rnd);
	/* The id names a file: keep it to a safe alphabet. */
	for (char *c = it->id; *c; c++)
		if (!strchr(NOTIFY_ID_ALPHABET, *c))
			*c = '_';
	json_object_object_add(payload, "id", json_object_new_string(it->id));
	if (!jstr(payload, "time")) {
		clock_format_utc(now, true, t, sizeof(t));
		json_object_object_add(payload, "time", json_object_new_string(t));
	}
	it->created = now / 1000000;
	it->pending = n->channels;
	it->doc = doc;
	json_object_object_add(doc, "version", json_object_new_int(1));
	json_object_object_add(doc, "id", json_object_new_string(it->id));
	json_object_object_add(doc, "created", json_object_new_int64(it->created));
	json_object_object_add(doc, "payload", payload);
	r = notify_spool_write(n, it);
	if (r < 0)
		/* Still delivered from memory; only a restart would lose it. */
		log_printf(LOG_ERR, "cannot write notification %s to the spool '%s': %s", it->id,
			   n->spool, strerror(-r));
	pthread_mutex_lock(&n->lock);
	notify_items_add(n, it);
	pthread_mutex_unlock(&n->lock);
	log_printf(LOG_INFO, "notification %s (%s, %s) queued", it->id,
		   jstr_or(payload, "type", "?"), jstr_or(payload, "result", "?"));
	return r < 0 ? r : 0;
}

size_t notify_pending(struct notify *n)
{
	size_t k;

	if (!n)
		return 0;
	pthread_mutex_lock(&n->lock);
	k = n->n_items;
	pthread_mutex_unlock(&n->lock);
	return k;
}

/* ---- gathering a run from the events ---- */

static struct run_node *run_node_get(struct notify *n, const char *name)
{
	for (size_t i = 0; i < n->n_run; i++)
		if (!strcmp(n->run[i].name, name))
			return &n->run[i];
	if (n->n_run >= n->cfg->n_nodes)
		return NULL;
	struct run_node *r = &n->run[n->n_run++];

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	return r;
}

static json_object *payload_base(struct notify *n, const char *type, const char *result,
				 int64_t time_usec)
{
	json_object *p = json_object_new_object();
	char t[64], details[1024];

	clock_format_utc(time_usec, true, t, sizeof(t));
	snprintf(details, sizeof(details), "resyncctl --config %s status", n->cfg->path);
	json_object_object_add(p, "version", json_object_new_int(1));
	json_object_object_add(p, "type", json_object_new_string(type));
	json_object_object_add(p, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(p, "node", json_object_new_string(n->o.node));
	json_object_object_add(p, "primary",
			       json_string_or_null(cluster_config_primary_name(n->cfg)));
	json_object_object_add(p, "result", json_object_new_string(result));
	json_object_object_add(p, "time", json_object_new_string(t));
	json_object_object_add(p, "details", json_object_new_string(details));
	return p;
}

static void on_done(struct notify *n, const struct event *e)
{
	const char *type = e->result == EVENT_RESULT_SUCCESS	 ? "resync_finished"
			   : e->result == EVENT_RESULT_CANCELLED ? "resync_cancelled"
								 : "resync_failed";
	json_object *p = payload_base(n, type, event_result_name(e->result), e->time_usec),
		    *arr = json_object_new_array();

	json_object_object_add(p, "seconds", json_object_new_double(e->seconds));
	if (e->generation[0])
		json_object_object_add(p, "generation", json_object_new_string(e->generation));
	for (size_t i = 0; i < n->n_run; i++) {
		struct run_node *r = &n->run[i];
		json_object *x = json_object_new_object();
		const char *res = !r->has_ended ? "failed"
				  : r->ended.kind == EVENT_RESYNC_FINISHED ? "resynced"
				  : r->ended.kind == EVENT_RESYNC_CANCELLED ? "cancelled"
									    : "failed";

		json_object_object_add(x, "name", json_object_new_string(r->name));
		json_object_object_add(x, "result", json_object_new_string(res));
		json_object_object_add(x, "state_before",
				       json_object_new_string(meta_state_name(r->has_started ? r->started.state
											     : META_STATE_UNKNOWN)));
		json_object_object_add(x, "state_after",
				       json_object_new_string(meta_state_name(r->has_ended ? r->ended.state
											   : META_STATE_UNKNOWN)));
		json_object_object_add(x, "bytes_compared",
				       json_object_new_uint64(r->has_ended ? r->ended.bytes_compared : 0));
		json_object_object_add(x, "bytes_sent",
				       json_object_new_uint64(r->has_ended ? r->ended.bytes_sent : 0));
		json_object_object_add(x, "seconds",
				       json_object_new_double(r->has_ended ? r->ended.seconds : 0));
		if (r->has_ended && r->ended.kind != EVENT_RESYNC_FINISHED)
			json_object_object_add(x, "error", json_object_new_string(r->ended.error));
		if (r->has_proof) {
			json_object *pr = json_object_new_object();

			json_object_object_add(pr, "root", json_object_new_string(r->proof.root));
			json_object_object_add(pr, "primary_root",
					       json_object_new_string(r->proof.primary_root));
			json_object_object_add(pr, "match", json_object_new_boolean(r->proof.match));
			json_object_object_add(x, "proof", pr);
		}
		json_object_array_add(arr, x);
	}
	json_object_object_add(p, "nodes", arr);
	if (n->has_fence) {
		json_object_object_add(p, "fence", json_object_new_string(n->fence_whole ? "whole" : "short"));
		json_object_object_add(p, "passes", json_object_new_int((int)n->fence_passes));
		json_object_object_add(p, "primary_fence_seconds", json_object_new_double(n->fence_seconds));
	}
	n->has_fence = false;
	n->n_run = 0;
	notify_submit(n, p);
}

static void on_state(struct notify *n, const struct event *e)
{
	json_object *p, *arr, *x;

	/* An Inconsistent that a running resync asked for is no news; one
	 * left behind (a resync stopped half-way) and a Diverged are. */
	if (e->expected || (e->state != META_STATE_DIVERGED && e->state != META_STATE_INCONSISTENT))
		return;
	p = payload_base(n, "state_changed", meta_state_name(e->state), e->time_usec);
	arr = json_object_new_array();
	x = json_object_new_object();
	json_object_object_add(x, "name", json_object_new_string(e->node));
	json_object_object_add(x, "result", json_object_new_string(meta_state_name(e->state)));
	json_object_object_add(x, "state_before", json_object_new_string(event_state_name(e->old_state)));
	json_object_object_add(x, "state_after", json_object_new_string(meta_state_name(e->state)));
	json_object_object_add(x, "error", json_object_new_string(e->reason));
	json_object_array_add(arr, x);
	json_object_object_add(p, "nodes", arr);
	notify_submit(n, p);
}

static void on_event(struct notify *n, const struct event *e)
{
	struct run_node *r;

	switch (e->kind) {
	case EVENT_RESYNC_STARTED:
		r = run_node_get(n, e->node);
		if (r) {
			r->started = *e;
			r->has_started = true;
			r->has_ended = false;
			r->has_proof = false;
		}
		break;
	case EVENT_RESYNC_FINISHED:
	case EVENT_RESYNC_FAILED:
	case EVENT_RESYNC_CANCELLED:
		r = run_node_get(n, e->node);
		if (r) {
			r->ended = *e;
			r->has_ended = true;
		}
		break;
	case EVENT_PROOF:
		r = run_node_get(n, e->node);
		if (r) {
			r->proof = *e;
			r->has_proof = true;
		}
		break;
	case EVENT_FENCE_ENDED:
		n->has_fence = true;
		n->fence_whole = e->fence_whole;
		n->fence_passes = e->passes;
		n->fence_seconds = e->seconds;
		break;
	case EVENT_RESYNC_DONE:
		on_done(n, e);
		break;
	case EVENT_STATE_CHANGED:
		on_state(n, e);
		break;
	default:
		break;
	}
}

/* ---- the worker ---- */

static void publish_attempt(struct notify *n, const struct item *it, size_t ch, int r,
			    const char *err, double retry)
{
	struct event e = {.kind = r == 0 ? EVENT_NOTIFY_DELIVERED : EVENT_NOTIFY_FAILED,
			  .channel = notify_channel_table[ch].bit};

	snprintf(e.id, sizeof(e.id), "%s", it->id);
	snprintf(e.error, sizeof(e.error), "%s", err);
	e.attempts = it->attempts[ch];
	e.retry = retry;
	event_bus_publish(n->o.bus, &e);
}

static int attempt(struct notify *n, size_t ch, const json_object *p, char *err, size_t errlen)
{
	switch (notify_channel_table[ch].bit) {
	case NOTIFY_EMAIL:
		return notify_email_send(n, p, err, errlen);
	case NOTIFY_WEBHOOK:
		return notify_webhook_send(n, p, err, errlen);
	default:
		return notify_command_run(n, p, err, errlen);
	}
}

/* After a pass over it: an item with nothing pending leaves the list and
 * the spool, one whose attempts changed is written back. Returns the next
 * item, read under the lock before it may be freed. */
static struct item *item_settle(struct notify *n, struct item *it, bool changed)
{
	struct item *nx;

	/* Out of the spool before it leaves the count: whoever sees nothing
	 * pending finds nothing spooled either. */
	if (!it->pending)
		notify_spool_remove(n, it);
	pthread_mutex_lock(&n->lock);
	nx = it->next;
	if (!it->pending) {
		for (struct item **pp = &n->items; *pp; pp = &(*pp)->next) {
			if (*pp == it) {
				*pp = it->next;
				n->n_items--;
				break;
			}
		}
	}
	pthread_mutex_unlock(&n->lock);
	if (!it->pending) {
		notify_item_free(it);
	} else if (changed) {
		int r = notify_spool_write(n, it);

		if (r < 0)
			log_printf(LOG_ERR, "cannot update notification %s in '%s': %s", it->id,
				   n->spool, strerror(-r));
	}
	return nx;
}

/* One pass over the pending items: try each channel that is due. Returns
 * the monotonic ms of the next due attempt (INT64_MAX: none). */
static int64_t deliver_due(struct notify *n)
{
	unsigned bmin = n->o.backoff_min_ms ? n->o.backoff_min_ms : NOTIFY_BACKOFF_MIN_MS;
	unsigned bmax = n->o.backoff_max_ms ? n->o.backoff_max_ms : NOTIFY_BACKOFF_MAX_MS;
	unsigned max_age = n->o.max_age_s ? n->o.max_age_s : NOTIFY_MAX_AGE_S;
	int64_t next = INT64_MAX;
	struct item *it;

	pthread_mutex_lock(&n->lock);
	it = n->items;
	pthread_mutex_unlock(&n->lock);
	/* Only this thread removes items, so walking without the lock is
	 * safe; new ones are appended at the tail. */
	while (it && !atomic_load(&n->stopping)) {
		json_object *p = NULL;
		bool changed = false;

		json_object_object_get_ex(it->doc, "payload", &p);
		for (size_t ch = 0; ch < NOTIFY_CHANNEL_COUNT && !atomic_load(&n->stopping); ch++) {
			char err[1024] = "";
			int r;

			if (!(it->pending & notify_channel_table[ch].bit))
				continue;
			if (it->due[ch] > mono_ms()) {
				next = MIN(next, it->due[ch]);
				continue;
			}
			it->attempts[ch]++;
			changed = true;
			r = attempt(n, ch, p, err, sizeof(err));
			if (r == 0) {
				it->pending &= ~notify_channel_table[ch].bit;
				log_printf(LOG_INFO, "notification %s delivered by %s (attempt %u)",
					   it->id, notify_channel_table[ch].name, it->attempts[ch]);
				publish_attempt(n, it, ch, 0, "", 0);
				continue;
			}
			if (!err[0])
				snprintf(err, sizeof(err), "%s", strerror(-r));
			if (time(NULL) - it->created > (int64_t)max_age) {
				it->pending &= ~notify_channel_table[ch].bit;
				log_printf(LOG_ERR,
					   "notification %s by %s failed (attempt %u): %s; given up after %u s",
					   it->id, notify_channel_table[ch].name, it->attempts[ch], err,
					   max_age);
				publish_attempt(n, it, ch, r, err, 0);
				continue;
			}
			it->backoff[ch] = it->backoff[ch] ? MIN(it->backoff[ch] * 2, (int64_t)bmax) : bmin;
			it->due[ch] = mono_ms() + it->backoff[ch];
			next = MIN(next, it->due[ch]);
			log_printf(LOG_WARNING,
				   "notification %s by %s failed (attempt %u): %s; retry in %.1f s",
				   it->id, notify_channel_table[ch].name, it->attempts[ch], err,
				   (double)it->backoff[ch] / 1000);
			publish_attempt(n, it, ch, r, err, (double)it->backoff[ch] / 1000);
		}
		it = item_settle(n, it, changed);
	}
	return next;
}

static void *worker(void *arg)
{
	struct notify *n = arg;
	int64_t next = 0;

	while (!atomic_load(&n->stopping)) {
		struct event e;
		int64_t wait = next == INT64_MAX ? NOTIFY_TICK_MS : next - mono_ms();

		wait = MAX((int64_t)0, MIN(wait, (int64_t)NOTIFY_TICK_MS));
		if (n->q && event_queue_pop(n->q, (int)wait, &e, NULL) == 1) {
			on_event(n, &e);
			/* Drain what is queued before delivering. */
			while (event_queue_pop(n->q, 0, &e, NULL) == 1)
				on_event(n, &e);
		} else if (!n->q && wait > 0) {
			usleep((useconds_t)wait * 1000);
		}
		next = deliver_due(n);
	}
	return NULL;
}

/* Called by curl about once a second and at every transfer step (name
 * resolution and connecting included): a stopping notifier aborts the
 * transfer (CURLE_ABORTED_BY_CALLBACK) instead of holding notify_free()
 * for up to the transfer timeout. The item stays spooled for the next
 * start. */
static int curl_stop_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			curl_off_t ulnow)
{
	struct notify *n = arg;

	return atomic_load(&n->stopping) ? 1 : 0;
}

void notify_curl_stop_set(CURL *c, struct notify *n)
{
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, curl_stop_cb);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, n);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int notify_new(const struct notify_opts *o, struct notify **ret)
{
	struct notify *n = calloc(1, sizeof(*n));
	const struct node_config *self;
	int r;

	if (!n)
		return -ENOMEM;
	n->o = *o;
	n->cfg = o->cfg;
	n->channels = notify_channels(o->cfg);
	pthread_mutex_init(&n->lock, NULL);
	if (!n->channels) {
		*ret = n;
		return 0;
	}
	self = cluster_config_node(o->cfg, o->node);
	if (o->spool_dir)
		n->spool = strdup(o->spool_dir);
	else if (self && asprintf(&n->spool, "%s.resync-notify", self->volume) < 0)
		n->spool = NULL;
	n->run = calloc(o->cfg->n_nodes ? o->cfg->n_nodes : 1, sizeof(*n->run));
	if (!n->spool || !n->run) {
		r = -ENOMEM;
		goto fail;
	}
	r = mkdir_p(n->spool, 0700);
	if (r < 0) {
		log_printf(LOG_ERR, "cannot create the notification spool '%s': %s", n->spool,
			   strerror(-r));
		goto fail;
	}
	r = notify_spool_load(n);
	if (r < 0) {
		log_printf(LOG_ERR, "cannot read the notification spool '%s': %s", n->spool,
			   strerror(-r));
		goto fail;
	}
	pthread_once(&curl_once, curl_init_once);
	if (o->bus) {
		r = event_queue_new(o->bus, 1024, &n->q);
		if (r < 0)
			goto fail;
	}
	r = -pthread_create(&n->thread, NULL, worker, n);
	if (r < 0)
		goto fail;
	n->started = true;
	*ret = n;
	return 0;
fail:
	notify_free(n);
	return r;
}

void notify_free(struct notify *n)
{
	if (!n)
		return;
	atomic_store(&n->stopping, true);
	if (n->started)
		pthread_join(n->thread, NULL);
	event_queue_free(n->q);
	while (n->items) {
		struct item *it = n->items;

		n->items = it->next;
		notify_item_free(it);
	}
	pthread_mutex_destroy(&n->lock);
	free(n->run);
	free(n->spool);
	free(n);
}
