/* The scheduled verify (drift.h), on the primary: every verify_interval,
 * each secondary is compared with this volume, DRIFT_VERIFY_STEP bytes at
 * a time, at most verify_max_rate bytes per second.
 *
 * A step hashes a range of this volume (blockcmp_hash_volume() of that
 * range) and asks the secondary for the seeded hashes of the same range's
 * blocks (PAGE_REQ with the cluster's block as its page): each side reads
 * only that range. The hash tree that `resyncctl verify` walks costs
 * fewer hashes on the wire, but its secondary builds the tree of its
 * whole volume for each seed; a verify by ranges can stop anywhere and go
 * on later from there (after a restart, after a resync), reading only the
 * rest: the offset reached and what differed below it are kept in the
 * state file. The wire carries 16 bytes a block (256 KiB a GiB of volume
 * at 64 KiB blocks).
 *
 * A resync (or a verify) asked for meanwhile runs first: it waits for the
 * step in flight at most (drift_yield()); the scheduled verify then closes
 * its connection and waits for the run to end. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drift.h"
#include "resync/blockcmp.h"
#include "resync/limits.h"
#include "resync/macro.h"

_Static_assert(DRIFT_VERIFY_STEP % RESYNC_BLOCK_MAX == 0, "a step is whole blocks");
_Static_assert(DRIFT_VERIFY_STEP / RESYNC_BLOCK_MIN <= RESYNC_WIRE_HASHES_MAX, "a step is one request");

/* One secondary's part of a run. */
struct vnode {
	struct node *n;
	const struct node_config *nc;
	struct drift_node *dn;
	struct peer_conn *c;
	struct wire_hello h;
	uint64_t features;
	unsigned char *buf;
	struct hash128 *mine, *theirs;
	uint64_t seed, size, start, compared;
	uint64_t pace_t0, pace_done; /* bytes compared since pace_t0 */
	uint64_t saved;		     /* clock_usec() of the last progress saved */
	unsigned named;		     /* differing blocks named in the log */
	char err[RESYNC_WIRE_TEXT_MAX + 256];
};

static bool resync_running(struct node *n)
{
	bool running;

	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	return running;
}

/* Mark a step in flight, unless a resync or a verify runs (checked under
 * n->lock, where node_run_jobs() sets it before it waits for the step:
 * once it is set, no step starts). */
static bool step_begin(struct node *n)
{
	struct drift *d = n->drift;
	bool ok;

	pthread_mutex_lock(&n->lock);
	ok = !n->resync_running;
	if (ok) {
		pthread_mutex_lock(&d->lock);
		d->busy = true;
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_unlock(&n->lock);
	return ok;
}

static void step_end(struct node *n)
{
	struct drift *d = n->drift;

	pthread_mutex_lock(&d->lock);
	d->busy = false;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

/* Connect, hellos; the range compared is the smaller volume's. */
static int vnode_open(struct vnode *v)
{
	uint16_t proto;
	int r;

	r = node_peer_open(v->n, v->nc, false, v->err, sizeof(v->err), &v->c, &v->h);
	event_publish_peer(v->n->bus, v->nc->name, r >= 0);
	if (r < 0)
		return r;
	v->features = v->h.features & node_features();
	if (wire_proto_negotiate(v->h.proto_min, v->h.proto_max, WIRE_PROTO_MIN, WIRE_PROTO_MAX,
				 &proto) < 0 ||
	    proto < 2 || !(v->features & WIRE_FEATURE_PAGES)) {
		snprintf(v->err, sizeof(v->err),
			 "node '%s' cannot answer a verify by ranges (no PAGE_REQ): use resyncctl verify",
			 v->nc->name);
		return -EPROTONOSUPPORT;
	}
	v->size = MIN(node_size(v->n), v->h.volume_size);
	v->pace_t0 = clock_usec();
	v->pace_done = 0;
	return 0;
}

static void vnode_close(struct vnode *v)
{
	peer_conn_free(v->c);
	v->c = NULL;
}

/* Compare [off, off + len): this volume's block hashes against the
 * secondary's; what differs is added to the progress. */
static int vnode_step(struct vnode *v, uint64_t off, uint64_t len)
{
	const struct cluster_config *cfg = v->n->cfg;
	struct blockcmp_opts o = {.block_size = cfg->block_size, .threads = 1, .seed = v->seed,
				  .nice = NODE_HASH_NICE};
	struct hashtree_range range = {off, len};
	uint64_t nb = DIV_ROUND_UP(len, cfg->block_size), bytes = 0, blocks = 0, unmarked = 0;
	struct wire_hash_reply rep;
	uint16_t type;
	size_t plen;
	int r;

	r = blockcmp_hash_volume(v->n->vol, off, len, &o, v->mine);
	if (r < 0) {
		snprintf(v->err, sizeof(v->err), "cannot read the primary's volume '%s': %s",
			 v->n->self->volume, strerror(-r));
		return r;
	}
	r = wire_page_req_encode(v->seed, cfg->block_size, &range, 1, v->buf, RESYNC_WIRE_FRAME_MAX,
				 &plen);
	if (r >= 0)
		r = peer_conn_send_frame(v->c, WIRE_PAGE_REQ, v->buf, plen);
	if (r >= 0)
		r = peer_conn_recv_frame(v->c, &type, v->buf, RESYNC_WIRE_FRAME_MAX, &plen);
	if (r < 0) {
		snprintf(v->err, sizeof(v->err), "node '%s': %s", v->nc->name, peer_conn_error(v->c));
		return r;
	}
	if (type == WIRE_ERROR) {
		struct wire_text t = {0};

		wire_text_decode(v->buf, plen, &t);
		snprintf(v->err, sizeof(v->err), "node '%s': %s", v->nc->name, t.text);
		return -EIO;
	}
	if (type != WIRE_PAGE_REPLY || wire_hash_reply_decode(v->buf, plen, &rep) < 0 ||
	    rep.n_hashes != nb || wire_hash_reply_get(&rep, v->theirs, nb) < 0) {
		snprintf(v->err, sizeof(v->err), "node '%s': malformed PAGE_REPLY", v->nc->name);
		return -EBADMSG;
	}
	for (uint64_t i = 0; i < nb; i++) {
		if (hash128_equal(&v->mine[i], &v->theirs[i]))
			continue;
		uint64_t b_off = off + i * cfg->block_size;
		uint64_t b_len = MIN((uint64_t)cfg->block_size, off + len - b_off);

		blocks++;
		bytes += b_len;
		unmarked += drift_unmarked_bytes(v->n, b_off, b_len);
		/* Named in the log, the first few of a run. */
		if (v->named++ < DRIFT_BLOCKS_LOGGED)
			log_warning("scheduled verify: node '%s' differs at offset %" PRIu64
				    " (block %" PRIu64 ")",
				    v->nc->name, off + i * cfg->block_size, off / cfg->block_size + i);
	}
	pthread_mutex_lock(&v->n->drift->lock);
	v->dn->off = off + len;
	v->dn->p_bytes += bytes;
	v->dn->p_unmarked += unmarked;
	v->dn->p_blocks += blocks;
	pthread_mutex_unlock(&v->n->drift->lock);
	v->compared += len;
	v->pace_done += len;
	return 0;
}

/* Wait as verify_max_rate asks (a KEEPALIVE now and then to a peer that
 * speaks them); early when the node stops or a resync waits to run. */
static void vnode_pace(struct vnode *v)
{
	uint64_t rate = v->n->cfg->verify_max_rate;

	if (!rate)
		return;
	for (;;) {
		uint64_t due = v->pace_t0 + v->pace_done * 1000000 / rate, now = clock_usec();

		if (now >= due || atomic_load(&v->n->stopping) || resync_running(v->n))
			return;
		if (v->features & WIRE_FEATURE_KEEPALIVE)
			(void)peer_conn_keepalive(v->c, node_keepalive_ms(v->n->cfg));
		usleep((useconds_t)MIN(due - now, (uint64_t)DRIFT_TICK_MS * 1000));
	}
}

/* A resync or a verify runs: let go of the connection, wait for its end. */
static bool vnode_yield(struct vnode *v)
{
	log_info("scheduled verify of '%s' waits for the resync or verify asked for (at %" PRIu64
			 " of %" PRIu64 " bytes)",
			 v->nc->name, v->dn->off, v->size);
	vnode_close(v);
	drift_save(v->n);
	while (resync_running(v->n))
		if (!drift_sleep(v->n, DRIFT_TICK_MS))
			return false;
	return true;
}

/* Compare one secondary from its offset on. 0 when its part is done (or
 * failed: v->err), -ECANCELED when the node stops. */
static int vnode_run(struct vnode *v)
{
	struct drift *d = v->n->drift;
	uint64_t nb = DRIFT_VERIFY_STEP / RESYNC_BLOCK_MIN;
	int r = 0;

	v->buf = malloc(RESYNC_WIRE_FRAME_MAX);
	v->mine = calloc(nb, sizeof(*v->mine));
	v->theirs = calloc(nb, sizeof(*v->theirs));
	if (!v->buf || !v->mine || !v->theirs)
		return -ENOMEM;
	r = hash_seed_random(&v->seed);
	if (r < 0)
		return r;
	pthread_mutex_lock(&d->lock);
	v->start = v->dn->off;
	pthread_mutex_unlock(&d->lock);
	for (;;) {
		uint64_t off;

		if (atomic_load(&v->n->stopping))
			return -ECANCELED;
		if (resync_running(v->n)) {
			if (!vnode_yield(v))
				return -ECANCELED;
			continue;
		}
		if (!v->c) {
			r = vnode_open(v);
			if (r < 0)
				return atomic_load(&v->n->stopping) ? -ECANCELED : r;
		}
		pthread_mutex_lock(&d->lock);
		off = v->dn->off;
		pthread_mutex_unlock(&d->lock);
		if (off >= v->size)
			return 0;
		if (!step_begin(v->n))
			continue; /* a resync: yield at the top */
		r = vnode_step(v, off, MIN((uint64_t)DRIFT_VERIFY_STEP, v->size - off));
		step_end(v->n);
		if (r < 0)
			return atomic_load(&v->n->stopping) ? -ECANCELED : r;
		if (clock_usec() - v->saved >= DRIFT_PROGRESS_SAVE_USEC) {
			v->saved = clock_usec();
			drift_save(v->n);
		}
		vnode_pace(v);
	}
}

/* The secondary's part ended (r: 0 or its failure): its last verify. */
static void vnode_result(struct vnode *v, int r)
{
	struct drift *d = v->n->drift;
	struct drift_node *dn = v->dn;
	uint64_t mine = node_size(v->n), bs = v->n->cfg->block_size;

	pthread_mutex_lock(&d->lock);
	/* Bytes of this volume past a smaller secondary's end differ. */
	if (r >= 0 && v->h.volume_size < mine) {
		dn->p_bytes += mine - v->h.volume_size;
		dn->p_unmarked += mine - v->h.volume_size;
		dn->p_blocks += DIV_ROUND_UP(mine, bs) - v->h.volume_size / bs;
	}
	dn->done = true;
	dn->verified = true;
	dn->verify_time = time(NULL);
	dn->failed = r < 0;
	snprintf(dn->error, sizeof(dn->error), "%s", r < 0 ? v->err : "");
	dn->diff_bytes = r < 0 ? 0 : dn->p_bytes;
	dn->diff_blocks = r < 0 ? 0 : dn->p_blocks;
	dn->diff_unmarked = r < 0 ? 0 : dn->p_unmarked;
	dn->compared = v->compared;
	dn->resumed_from = v->start;
	pthread_mutex_unlock(&d->lock);
	if (r < 0)
		log_error("scheduled verify of '%s' failed: %s", v->nc->name, v->err);
	else
		log_info("scheduled verify of '%s': %" PRIu64 " bytes in %" PRIu64
			 " blocks differ (%" PRIu64 " bytes compared from offset %" PRIu64 ")",
			 v->nc->name, dn->diff_bytes, dn->diff_blocks, v->compared, v->start);
}

/* One run over every secondary: a new one, or the one in the state file
 * resumed. Returns false when the node stops (the progress is kept). */
static bool verify_run(struct node *n)
{
	const struct cluster_config *cfg = n->cfg;
	struct drift *d = n->drift;
	bool resumed;

	pthread_mutex_lock(&d->lock);
	resumed = d->in_progress;
	if (!resumed) {
		d->in_progress = true;
		d->last_verify_start = time(NULL);
		for (size_t i = 0; i < cfg->n_nodes; i++) {
			d->nodes[i].off = d->nodes[i].p_bytes = d->nodes[i].p_blocks = 0;
			d->nodes[i].p_unmarked = 0;
			d->nodes[i].done = &cfg->nodes[i] == n->self;
		}
	}
	pthread_mutex_unlock(&d->lock);
	drift_save(n);
	log_info("scheduled verify of cluster '%s' %s", cfg->name, resumed ? "resumed" : "started");
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		struct vnode v = {.n = n, .nc = &cfg->nodes[i], .dn = &d->nodes[i]};
		bool done;
		int r;

		pthread_mutex_lock(&d->lock);
		done = v.dn->done;
		pthread_mutex_unlock(&d->lock);
		if (done || v.nc == n->self)
			continue;
		r = vnode_run(&v);
		vnode_close(&v);
		free(v.buf);
		free(v.mine);
		free(v.theirs);
		if (r == -ECANCELED) {
			drift_save(n);
			return false;
		}
		vnode_result(&v, r);
		drift_save(n);
		if (r >= 0)
			alert_verify(n, v.nc);
	}
	pthread_mutex_lock(&d->lock);
	d->in_progress = false;
	d->last_verify = time(NULL);
	d->kick_probe = true; /* the secondaries hear of it now */
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	drift_save(n);
	log_info("scheduled verify of cluster '%s' finished", cfg->name);
	return true;
}

void *verify_thread(void *arg)
{
	struct node *n = arg;
	struct drift *d = n->drift;
	uint64_t interval_ms = n->cfg->verify_interval_ms;
	bool first;

	/* Never verified: the first is due an interval from now, a time
	 * kept in the state file, so that restarts more frequent than the
	 * interval do not put it off for ever. */
	pthread_mutex_lock(&d->lock);
	first = !d->last_verify_start;
	if (first)
		d->last_verify_start = time(NULL);
	pthread_mutex_unlock(&d->lock);
	if (first)
		drift_save(n);

	while (!atomic_load(&n->stopping)) {
		int64_t now_ms = clock_real_usec() / 1000, due_ms;
		bool resume;

		pthread_mutex_lock(&d->lock);
		resume = d->in_progress;
		due_ms = d->last_verify_start * 1000 + (int64_t)interval_ms;
		pthread_mutex_unlock(&d->lock);
		if (!resume && now_ms < due_ms) {
			drift_sleep(n, (unsigned)MIN(due_ms - now_ms, (int64_t)1000));
			continue;
		}
		/* Skipped while a resync or verify runs: it may take long. */
		if (resync_running(n)) {
			drift_sleep(n, 1000);
			continue;
		}
		if (!verify_run(n))
			break;
	}
	return NULL;
}
